"""Loading the three checkpoint formats strictly and safely, against diffusers' reference network."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from models.checkpoints import load_model, load_weights, save_model
from models.errors import CheckpointError, UnsafeCheckpointError
from models.network import DiffusionAttnUnet1D
from tests.reference_nets import diffusers_unet, tiny_config

DIFFUSERS_CHANNELS = (32, 32, 64, 64, 64)


@pytest.fixture(scope="module")
def diffusers_dir(tmp_path_factory):
    unet = diffusers_unet(DIFFUSERS_CHANNELS, 2)
    folder = tmp_path_factory.mktemp("harmonai-like")
    unet.save_pretrained(folder / "unet")
    return folder, unet


def test_diffusers_layout_gives_equal_outputs(diffusers_dir):
    folder, unet = diffusers_dir
    model, weights = load_model(folder)
    assert weights.format == "diffusers"
    assert weights.state["timestep_embed.weight"].shape == (8, 1)  # diffusers stores it 8-wide
    assert model.config.depth == 6 and model.config.sample_rate == 16000
    torch.manual_seed(1)
    x, t = torch.randn(2, 2, 192), torch.rand(2)
    with torch.no_grad():
        expected = unet(x, t).sample
        for channels_last in (False, True):
            model.channels_last = channels_last
            got = model(x, t)
            scale = expected.abs().max()
            assert ((got - expected).abs().max() / scale) < 1e-5


def test_diffusers_bin_weights_load_too(diffusers_dir, tmp_path):
    folder, unet = diffusers_dir
    unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    a = load_weights(tmp_path)
    b = load_weights(folder)
    assert a.state.keys() == b.state.keys()
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def _harmonai_ckpt(model: DiffusionAttnUnet1D, path, extra_noise: bool = True):
    ema = {f"diffusion_ema.{k}": v.clone() for k, v in model.state_dict().items()}
    online = {f"diffusion.{k}": v + 1.0 for k, v in model.state_dict().items()}  # must be ignored
    torch.save({"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.6.0",
                "state_dict": {**online, **ema}, "optimizer_states": [], "lr_schedulers": []}, path)


def test_lightning_ckpt_loads_ema_weights(diffusers_dir, tmp_path):
    folder, _ = diffusers_dir
    reference, _ = load_model(folder)
    path = tmp_path / "my-finetune.ckpt"
    _harmonai_ckpt(reference, path)
    model, weights = load_model(path, sample_rate=44100)
    assert weights.format == "harmonai-ckpt" and model.config.sample_rate == 44100
    assert model.config.c_mults == reference.config.c_mults
    assert model.config.first_attn_level == reference.config.first_attn_level
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_public_checkpoint_recognised_by_name(tmp_path):
    model = DiffusionAttnUnet1D(tiny_config())
    path = tmp_path / "maestro-uncond-150k.ckpt"
    _harmonai_ckpt(model, path)
    weights = load_weights(path)
    assert weights.config.sample_rate == 16000 and weights.config.name == "maestro-150k"


def test_own_format_round_trip_and_fp16(tmp_path):
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(tiny_config(categories=("kick", "snare"), name="mine")).eval()
    full = save_model(model, tmp_path / "mine.safetensors")
    half = save_model(model, tmp_path / "mine16.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, weights = load_model(full)
    assert weights.config == model.config and weights.config.categories == ("kick", "snare")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    loaded16, _ = load_model(half)
    diff = max((loaded16.state_dict()[k] - v).abs().max().item() for k, v in model.state_dict().items())
    assert 0 < diff < 1e-2


def test_strict_loading_names_missing_unexpected_and_misshapen_keys(tmp_path):
    model = DiffusionAttnUnet1D(tiny_config())
    state = {f"diffusion_ema.{k}": v for k, v in model.state_dict().items()}
    del state["diffusion_ema.net.1.main.0.bias"]
    state["diffusion_ema.net.1.extra.weight"] = torch.zeros(3)
    state["diffusion_ema.net.5.main.0.weight"] = torch.zeros(16, 16, 3)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "bad.ckpt")
    message = str(info.value)
    assert "missing 1 keys: net.1.main.0.bias" in message
    assert "unexpected 1 keys: net.1.extra.weight" in message
    assert "net.5.main.0.weight (16, 16, 3)" in message


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch-zip"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"diffusion_ema.x": _Exploit()}}
    if writer == "pickle":
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    else:
        torch.save(payload, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load 'evil.ckpt'.*system"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable checkpoint"),
    (b"\x80\x04garbage" * 10, "not a readable checkpoint"),
])
def test_corrupt_files_get_clear_errors(tmp_path, content, match):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_weights(path)


def test_bad_paths_and_formats(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "nope.ckpt")
    (tmp_path / "model.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="suffix '.txt'"):
        load_weights(tmp_path / "model.txt")
    with pytest.raises(CheckpointError, match="not a diffusers model"):
        load_weights(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights(tmp_path / "junk.safetensors")

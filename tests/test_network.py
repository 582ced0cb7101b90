"""The network against the original architecture: key layout, parameter count, equal outputs."""

from __future__ import annotations

import pytest
import torch

from models.config import ModelConfig, harmonai_config
from models.errors import ConfigError, LengthError
from models.network import DiffusionAttnUnet1D, count_parameters
from tests.reference_nets import dense_resampling_forward, tiny_config


def test_harmonai_layout_has_original_keys_and_size():
    model = DiffusionAttnUnet1D(harmonai_config())
    state = model.state_dict()
    assert count_parameters(model) == 221_389_322
    assert len(state) == 932  # 906 parameters + 26 resampling kernels, as in the .ckpt files
    assert state["timestep_embed.weight"].shape == (8, 1)
    level9 = "net.3." + "main.7." * 7 + "main.2.qkv_proj.weight"
    assert state[level9].shape == (1536, 512, 1)
    level8 = "net.3." + "main.7." * 6 + "main.2.qkv_proj.weight"
    assert level8 not in state  # attention starts at level 9


@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_resampling_equals_dense_original(channels_last):
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(tiny_config()).eval()
    x, t = torch.randn(2, 2, 768), torch.rand(2)
    with torch.no_grad():
        model.channels_last = False
        reference = dense_resampling_forward(model, x, t)
        model.channels_last = channels_last
        ours = model(x, t)
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()


def test_output_depends_on_time_and_labels():
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(tiny_config(categories=("kick", "hat"))).eval()
    x = torch.randn(1, 2, 384)
    with torch.no_grad():
        a = model(x, torch.tensor([0.3]), torch.tensor([0]))
        b = model(x, torch.tensor([0.7]), torch.tensor([0]))
        c = model(x, torch.tensor([0.3]), torch.tensor([1]))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="needs labels"):
        model(x, torch.tensor([0.3]))


def test_config_validation_names_bad_values():
    with pytest.raises(ConfigError, match="c_mults must have depth=5"):
        tiny_config(c_mults=(16, 32, 32))
    with pytest.raises(ConfigError, match="channels must be 1"):
        tiny_config(channels=3)
    with pytest.raises(ConfigError, match="multiple of 32"):
        tiny_config(c_mults=(16, 16, 32, 32, 32))
    config = tiny_config()
    assert config.factor == 16 and config.min_length == 48
    assert config.padded_length(50) == 64 and config.padded_length(10) == 48
    with pytest.raises(LengthError, match="seconds must be at least"):
        config.length_for_seconds(0.001)
    with pytest.raises(ConfigError, match="category must be one of"):
        tiny_config(categories=("kick",)).category_index("snare")
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_a_patched_network_folds_samples_into_channels_and_back():
    """patch = p: every p consecutive samples become p channels of one position, and the output unfolds
    the same way, so sample k of the output is computed at position k // p."""
    torch.manual_seed(0)
    config = tiny_config(patch=4, categories=("kick", "hat"))
    assert config.factor == 4 * 2 ** (config.depth - 1) and config.io_channels == 8
    model = DiffusionAttnUnet1D(config).eval()
    assert model.net[0].main[0].weight.shape[1] == config.in_channels == 8 + 16 + 16
    x = torch.randn(2, 2, config.sample_size)
    t, labels = torch.rand(2), torch.tensor([0, 1])
    with torch.no_grad():
        out = model(x, t, labels)
        assert out.shape == x.shape
        plain = model._unet(x.reshape(2, 2, -1, 4).transpose(2, 3).reshape(2, 8, -1), t, labels)
    # the first output sample is channel 0 at position 0; the second is channel 1 (the next sample)
    assert torch.allclose(out[:, 0, 0], plain[:, 0, 0]) and torch.allclose(out[:, 0, 1], plain[:, 1, 0])
    assert torch.allclose(out[:, 1, 4], plain[:, 4, 1])
    with pytest.raises(ConfigError, match="patch must be one of"):
        tiny_config(patch=3)


def test_a_patched_model_round_trips_through_its_file(tmp_path):
    from models.checkpoints import load_model, save_model

    torch.manual_seed(1)
    model = DiffusionAttnUnet1D(tiny_config(patch=8)).eval()
    loaded, _ = load_model(save_model(model, tmp_path / "p.safetensors"))
    assert loaded.config.patch == 8
    x, t = torch.randn(1, 2, model.config.sample_size), torch.rand(1)
    with torch.no_grad():
        assert torch.equal(model(x, t), loaded(x, t))

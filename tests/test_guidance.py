"""Per-level conditioning, label dropout and classifier-free guidance, from the network to the command line."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from companion.cli.main import main
from companion.engine.model_files import load_backend
from export.onnx_export import export_onnx
from models.checkpoints import load_weights, read_own_metadata, save_model
from models.errors import ConfigError
from models.generate import SamplingOptions, generate, guided, variation
from models.network import DiffusionAttnUnet1D
from models.train import Trainer, TrainOptions, add_level_cond
from tests.reference_nets import tiny_backend, tiny_config

CATS = ("kick", "hat")
FAST = SamplingOptions("dpmpp-2m", steps=3)


def _nudge(model: DiffusionAttnUnet1D, seed: int = 1) -> DiffusionAttnUnet1D:
    """Give the zero-initialised level maps random values, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for proj in model.level_cond:
            proj.weight.copy_(torch.randn(proj.weight.shape, generator=gen) * 0.3)
            proj.bias.copy_(torch.randn(proj.bias.shape, generator=gen) * 0.3)
    return model


# --- the network ---------------------------------------------------------------------------------------------


def test_level_cond_adds_maps_outside_the_trunk_and_starts_as_the_plain_network():
    torch.manual_seed(0)
    plain = DiffusionAttnUnet1D(tiny_config(categories=CATS)).eval()
    config, state = add_level_cond(plain.config, plain.state_dict())
    assert config.level_cond and not plain.config.level_cond
    grown = DiffusionAttnUnet1D(config).eval()
    grown.load_state_dict(state)
    new_keys = set(grown.state_dict()) - set(plain.state_dict())
    assert new_keys and all(k.startswith(("cond_mlp.", "level_cond.")) for k in new_keys)
    assert len(grown.level_cond) == config.depth - 1
    x, t, labels = torch.randn(2, 2, 768), torch.tensor([0.3, 0.8]), torch.tensor([0, 1])
    with torch.no_grad():
        for channels_last in (False, True):
            plain.channels_last = grown.channels_last = channels_last
            torch.testing.assert_close(grown(x, t, labels), plain(x, t, labels), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="already has level conditioning"):
        add_level_cond(config, state)


def test_level_maps_carry_time_and_category_to_the_inner_levels():
    torch.manual_seed(0)
    model = _nudge(DiffusionAttnUnet1D(tiny_config(categories=CATS, level_cond=True))).eval()
    x = torch.randn(1, 2, 768)
    with torch.no_grad():
        model.channels_last = False
        a = model(x, torch.tensor([0.3]), torch.tensor([0]))
        before = a.clone()
        model.level_cond[-1].bias.add_(1.0)  # only the innermost level's offset changes
        b = model(x, torch.tensor([0.3]), torch.tensor([0]))
        model.channels_last = True
        c = model(x, torch.tensor([0.3]), torch.tensor([0]))
    assert (b - before).abs().max() > 1e-3  # the innermost level's map reaches the output
    torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-5)  # both memory layouts agree


def test_category_minus_one_is_the_zero_embedding():
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(tiny_config(categories=CATS, level_cond=True)).eval()
    _nudge(model)
    x, t = torch.randn(1, 2, 768), torch.tensor([0.5])
    with torch.no_grad():
        none = model(x, t, torch.tensor([-1]))
        kick = model(x, t, torch.tensor([0]))
        model.class_embed.weight.zero_()  # every category now looks like "none"
        zeroed = model(x, t, torch.tensor([0]))
    assert not torch.allclose(none, kick)
    torch.testing.assert_close(zeroed, none, rtol=0, atol=0)


def test_config_checks_guidance_and_level_cond():
    assert tiny_config(categories=CATS, guidance=3).guidance == 3.0
    with pytest.raises(ConfigError, match=r"guidance must be a number in 1\.\.20 \(1 = none\), got 0\.5"):
        tiny_config(categories=CATS, guidance=0.5)
    with pytest.raises(ConfigError, match="guidance 2 needs a model with categories"):
        tiny_config(guidance=2.0)
    with pytest.raises(ConfigError, match="level_cond must be true or false, got 'yes'"):
        tiny_config(level_cond="yes")
    for bad in ((0.5,), (0.2, 1.5), ("low", "high"), 0.5):
        with pytest.raises(ConfigError, match="guidance_interval must be two times low < high in 0..1"):
            tiny_config(categories=CATS, guidance_interval=bad)
    config = tiny_config(categories=CATS, level_cond=True, guidance=2.5, guidance_interval=(0.1, 0.8))
    assert type(config).from_json(config.to_json()) == config


# --- training ------------------------------------------------------------------------------------------------


class _Recorder(torch.nn.Module):
    def __init__(self, model: DiffusionAttnUnet1D) -> None:
        super().__init__()
        self.inner, self.seen = model, []
        self.config = model.config

    def forward(self, x, t, labels=None):
        self.seen.append(labels.tolist())
        return self.inner(x, t, labels)


def test_label_dropout_trains_a_share_of_items_without_their_category(tmp_path):
    from models.datasets import SynthSource

    source = SynthSource(sample_rate=16000, sample_size=768, seed=0)
    config = tiny_config(categories=source.categories, level_cond=True)
    options = TrainOptions(steps=1, batch_size=20, label_dropout=0.3, checkpoint_every="0", threads=1,
                           device="cpu")
    trainer = Trainer(config, source, options, tmp_path / "a")
    trainer.model = _Recorder(trainer.model)
    for micro in range(5):
        trainer.loss_on(micro)
    seen = np.array(trainer.model.seen)
    share = np.mean(seen == -1)
    assert 0.15 < share < 0.45, share  # 100 items at 30%
    kept = seen[seen >= 0]
    assert set(kept.tolist()) == set(range(len(source.categories)))  # the rest keep their own categories
    again = Trainer(config, source, options, tmp_path / "b")  # the same items are dropped on a re-run
    again.model = _Recorder(again.model)
    for micro in range(5):
        again.loss_on(micro)
    assert again.model.seen == trainer.model.seen
    with pytest.raises(ConfigError, match=r"label_dropout must be in \[0, 1\), got 1\.0"):
        TrainOptions(label_dropout=1.0)


def test_cli_finetune_adds_level_cond_and_records_the_guidance(tmp_path, capsys):
    own = tmp_path / "own.safetensors"
    torch.manual_seed(0)
    from models.synth import CATEGORIES

    save_model(DiffusionAttnUnet1D(tiny_config(categories=CATEGORIES)), own)
    export = tmp_path / "guided.safetensors"
    argv = ["train", "--init", str(own), "--synth", "--sample-size", "768", "--steps", "2", "--batch-size", "2",
            "--run-dir", str(tmp_path / "r"), "--export", str(export), "--device", "cpu", "--threads", "1"]
    assert main(argv + ["--level-cond", "--label-dropout", "0.2", "--guidance", "2.5"]) == 0
    assert "added per-level conditioning" in capsys.readouterr().out
    weights = load_weights(export)
    assert weights.config.level_cond and weights.config.guidance == 2.5
    assert any(k.startswith("level_cond.") for k in weights.state)
    assert json.loads(read_own_metadata(export)["train_options"])["label_dropout"] == 0.2
    # guidance without label dropout is refused: the model never learned its unconditional sound
    argv[argv.index(str(tmp_path / "r"))] = str(tmp_path / "r2")
    assert main(argv + ["--guidance", "2.5"]) == 2
    assert "--guidance 2.5 needs a model trained with --label-dropout > 0" in capsys.readouterr().err


# --- sampling ------------------------------------------------------------------------------------------------


class _FakeBackend:
    """v = the label (cast to float) everywhere: guidance's arithmetic is easy to see."""

    def __init__(self, guidance: float = 1.0) -> None:
        self.config = tiny_config(categories=CATS, guidance=guidance)
        self.batches: list[list[int]] = []

    def denoiser(self, labels):
        def denoise(x, t):
            lab = np.asarray(labels)
            self.batches.append(lab.tolist())
            return np.broadcast_to(lab.astype(np.float32)[:, None, None], x.shape).copy()

        return denoise


def test_guided_denoiser_extrapolates_from_the_unconditional_prediction():
    fake = _FakeBackend()
    x, t = np.zeros((2, 2, 8), np.float32), np.full(2, 0.5, np.float32)
    v = guided(fake, np.array([1, 0]), 3.0)(x, t)
    # cond = label, uncond = -1: -1 + 3 * (label + 1)
    np.testing.assert_allclose(v[0], 5.0)
    np.testing.assert_allclose(v[1], 2.0)
    assert fake.batches == [[1, 0, -1, -1]]  # one network call of twice the batch
    plain = guided(fake, np.array([1]), 1.0)(x[:1], t[:1])
    np.testing.assert_allclose(plain, 1.0)
    assert fake.batches[-1] == [1]


def test_guidance_applies_only_inside_its_interval():
    fake = _FakeBackend()
    denoise = guided(fake, np.array([1]), 3.0, (0.2, 0.8))
    x = np.zeros((1, 2, 8), np.float32)
    outside_high = denoise(x, np.array([0.9], np.float32))
    inside = denoise(x, np.array([0.5], np.float32))
    edge = denoise(x, np.array([0.2], np.float32))  # the interval is inclusive
    outside_low = denoise(x, np.array([0.1], np.float32))
    np.testing.assert_allclose(outside_high, 1.0)
    np.testing.assert_allclose(outside_low, 1.0)
    np.testing.assert_allclose(inside, 5.0)
    np.testing.assert_allclose(edge, 5.0)
    assert fake.batches == [[1], [1, -1], [1, -1], [1]]  # outside, one plain call of the batch's size


def test_sampling_options_take_the_models_guidance_unless_chosen():
    rec = tiny_config(categories=CATS, guidance=2.0)
    assert SamplingOptions().resolved(rec).guidance == 2.0
    assert SamplingOptions(guidance=1.0).resolved(rec).guidance == 1.0
    assert SamplingOptions().resolved(tiny_config()).guidance == 1.0
    with pytest.raises(ConfigError, match=r"guidance must be a number in 1\.\.20 \(1 = none\), got 25"):
        SamplingOptions(guidance=25).resolved(rec)
    with pytest.raises(ConfigError, match="guidance 3 needs a model with categories"):
        SamplingOptions(guidance=3).resolved(tiny_config())
    windowed = tiny_config(categories=CATS, guidance=2.0, guidance_interval=(0.1, 0.8))
    assert SamplingOptions().resolved(windowed).guidance_interval == (0.1, 0.8)
    assert SamplingOptions(guidance_interval=(0, 1)).resolved(windowed).guidance_interval == (0.0, 1.0)
    with pytest.raises(ConfigError, match=r"guidance_interval must be two times low < high in 0\.\.1, got \(0\.8, 0\.1\)"):
        SamplingOptions(guidance_interval=(0.8, 0.1)).resolved(windowed)


def test_generate_and_variation_use_guidance_and_stay_deterministic():
    backend = tiny_backend(categories=CATS, level_cond=True, sample_size=768)
    _nudge(backend.model)
    plain = generate(backend, [4, 5], category="kick", options=FAST)
    strong = generate(backend, [4, 5], category="kick", options=SamplingOptions("dpmpp-2m", 3, guidance=4.0))
    again = generate(backend, [5], category="kick", options=SamplingOptions("dpmpp-2m", 3, guidance=4.0))
    assert np.abs(strong - plain).max() > 1e-3
    np.testing.assert_allclose(again[0], strong[1], atol=1e-5)  # a seed's sound does not depend on its batch
    varied = variation(backend, strong[0], [1], strength=0.5, category="kick",
                       options=SamplingOptions("dpmpp-2m", 4, guidance=4.0))
    assert varied.shape == (1, 2, 768) and np.isfinite(varied).all()


def test_bad_labels_name_what_is_allowed():
    backend = tiny_backend(categories=CATS)
    with pytest.raises(ConfigError, match=r"labels must be category indices in 0\.\.1 \(or -1: no category\), "
                                          r"got \[2\]"):
        backend.denoiser(np.array([2]))


def test_cli_generate_takes_guidance_and_writes_it_in_the_recipe(tmp_path, capsys):
    torch.manual_seed(0)
    model = _nudge(DiffusionAttnUnet1D(tiny_config(categories=CATS, level_cond=True, guidance=2.0)))
    path = save_model(model, tmp_path / "g.safetensors")
    out = tmp_path / "out"
    base = ["generate", "--model", str(path), "--category", "hat", "--steps", "3", "--sampler", "dpmpp-2m",
            "--out", str(out), "--seed", "7"]
    assert main(base) == 0
    assert "guidance 2" in capsys.readouterr().out
    sidecars = sorted(out.rglob("dd_*.json"))
    recipe = json.loads(sidecars[0].read_text())["recipe"]
    assert (recipe["guidance"], recipe["guidance_interval"]) == (2.0, [0.0, 1.0])
    assert main(base + ["--guidance-interval", "0.2", "0.9", "--seed", "9"]) == 0
    assert "guidance 2 for t in [0.2, 0.9]" in capsys.readouterr().out
    assert main(base + ["--guidance", "30"]) == 2
    assert "guidance must be a number in 1..20" in capsys.readouterr().err


# --- ONNX ----------------------------------------------------------------------------------------------------


def test_level_conditioned_model_exports_and_guides_through_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    model = _nudge(DiffusionAttnUnet1D(tiny_config(categories=CATS, level_cond=True, guidance=2.0))).eval()
    weights = save_model(model, tmp_path / "m.safetensors")
    report = export_onnx(model, tmp_path / "m.onnx")  # its parity check includes a category -1 item
    assert report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 2, 256)).astype(np.float32)
    t, labels = np.array([0.4, 0.4], np.float32), np.array([1, -1], np.int64)
    got = session.run(None, {"x": x, "t": t, "labels": labels})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(labels)).numpy()
    assert np.abs(got - want).max() < 1e-4
    ort_backend = load_backend(tmp_path / "m.onnx", backend="onnxruntime")
    torch_backend = load_backend(weights, backend="torch")
    assert ort_backend.config.guidance == 2.0
    a = generate(ort_backend, [3], category="hat", length=256, options=FAST)
    b = generate(torch_backend, [3], category="hat", length=256, options=FAST)
    np.testing.assert_allclose(a, b, atol=1e-3)

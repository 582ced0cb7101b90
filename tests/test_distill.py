"""Guidance distillation: a model learns, in one call, the guided prediction its starting weights gave in two."""

from __future__ import annotations

import json

import pytest
import torch

from companion.cli.main import main
from models.checkpoints import load_weights, read_own_metadata, save_model
from models.datasets import SynthSource
from models.errors import ConfigError
from models.network import DiffusionAttnUnet1D
from models.synth import CATEGORIES
from models.train import Trainer, TrainOptions
from tests.reference_nets import tiny_config

RATE, SIZE = 16000, 768
FAST = dict(batch_size=4, checkpoint_every="0", threads=1, device="cpu", log_every=1)


def teacher_state(seed=0):
    torch.manual_seed(seed)
    net = DiffusionAttnUnet1D(tiny_config(categories=CATEGORIES, guidance=2.0))
    with torch.no_grad():  # a class embedding far from zero: cond and uncond predictions clearly differ
        net.class_embed.weight.normal_(0.0, 1.0)
    return net.config, {k: v.clone() for k, v in net.state_dict().items()}


def trainer(tmp_path, run="run", **options):
    config, state = teacher_state()
    opts = TrainOptions(**{**FAST, "distill_guidance": 3.0, "label_dropout": 0.25, "lr": 3e-3, **options})
    return Trainer(config, SynthSource(sample_rate=RATE, sample_size=SIZE, seed=0), opts, tmp_path / run,
                   init_state=state, init_from="teacher")


def probe():
    labels = torch.tensor([0, 3, 6, 9, -1, 2])
    x = torch.randn(len(labels), 2, SIZE, generator=torch.Generator().manual_seed(5)) * 0.5
    return x, torch.linspace(0.2, 0.9, len(labels)), labels


def test_the_target_is_the_teachers_guided_prediction_and_unlabelled_items_the_unconditional_one(tmp_path):
    tr = trainer(tmp_path)
    x, t, labels = probe()
    with torch.no_grad():
        cond = tr.teacher(x, t, labels)
        uncond = tr.teacher(x, t, torch.full_like(labels, -1))
    target = tr._guided_target(x, t, labels)
    expected = uncond + 3.0 * (cond - uncond)
    labelled = labels >= 0
    torch.testing.assert_close(target[labelled], expected[labelled], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(target[~labelled], uncond[~labelled], rtol=1e-4, atol=1e-5)
    assert (cond - uncond)[labelled].abs().max() > 1e-2  # guidance changes the target: the check above can fail
    assert tr.config.guidance == 1.0  # the guidance is built in: the result recommends none on top


def test_training_brings_the_student_to_the_guided_prediction(tmp_path):
    # a random tiny teacher's guided prediction is noise-like and does not generalise in a test's budget, so the
    # run trains on one batch over and over: the objective's gradient must take the student to the target
    tr = trainer(tmp_path, steps=30, lr=3e-4)
    loss_on = tr.loss_on
    with torch.no_grad():
        before = loss_on(0).item()
    tr.loss_on = lambda micro: loss_on(0)
    tr.run()
    with torch.no_grad():
        after = loss_on(0).item()
    assert after < 0.5 * before, (before, after)
    # the teacher stayed frozen: its weights are still the starting ones
    _, start = teacher_state()
    assert all(torch.equal(start[k], v) for k, v in tr.teacher.state_dict().items())


def test_a_distillation_resumes_bit_for_bit_with_its_teacher(tmp_path):
    straight = trainer(tmp_path, "a", steps=4)
    straight.run()
    half = trainer(tmp_path, "b", steps=2)
    half.run()
    resumed = Trainer.resume(tmp_path / "b", overrides={"steps": 4})
    resumed.run()
    for a, b in ((straight.model, resumed.model), (straight.teacher, resumed.teacher)):
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not all(torch.equal(resumed.model.state_dict()[k], v) for k, v in resumed.teacher.state_dict().items())
    with pytest.raises(ConfigError, match="cannot change distill_guidance"):
        Trainer.resume(tmp_path / "b", overrides={"distill_guidance": 2.0})


def test_bad_distillations_are_refused_clearly(tmp_path):
    for bad in (0.5, 1.0, 25.0, True, "2"):
        with pytest.raises(ConfigError, match=r"distill_guidance must be 0 \(off\) or a guidance scale in \(1, 20\]"):
            TrainOptions(distill_guidance=bad)
    config, _ = teacher_state()
    source = SynthSource(sample_rate=RATE, sample_size=SIZE, seed=0)
    with pytest.raises(ConfigError, match="needs the model to distill"):
        Trainer(config, source, TrainOptions(distill_guidance=2.0, **FAST), tmp_path / "r")
    plain = tiny_config()
    with pytest.raises(ConfigError, match="needs a model with categories"):
        Trainer(plain, source, TrainOptions(distill_guidance=2.0, **FAST), tmp_path / "r2",
                init_state=DiffusionAttnUnet1D(plain).state_dict(), unconditional=True)


def test_cli_distills_and_the_export_recommends_no_further_guidance(tmp_path, capsys):
    config, state = teacher_state()
    net = DiffusionAttnUnet1D(config)
    net.load_state_dict(state)
    own = save_model(net, tmp_path / "guided.safetensors")
    export = tmp_path / "fast.safetensors"
    argv = ["train", "--init", str(own), "--synth", "--sample-size", str(SIZE), "--steps", "2", "--batch-size", "2",
            "--run-dir", str(tmp_path / "r"), "--export", str(export), "--device", "cpu", "--threads", "1",
            "--distill-guidance", "2", "--label-dropout", "0.15"]
    assert main(argv) == 0
    weights = load_weights(export)
    assert weights.config.guidance == 1.0 and load_weights(own).config.guidance == 2.0
    assert json.loads(read_own_metadata(export)["train_options"])["distill_guidance"] == 2.0
    assert any(not torch.equal(weights.state[k].float(), v.float()) for k, v in state.items())  # it trained
    argv[argv.index(str(tmp_path / "r"))] = str(tmp_path / "r2")
    assert main(argv + ["--guidance", "1.5"]) == 2
    assert "has its guidance built in" in capsys.readouterr().err

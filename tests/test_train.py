"""Training: the objective learns, resume is exact, interruptions lose nothing, exports and fine-tunes load."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from companion.cli.main import main
from models.checkpoints import load_weights, safe_torch_load, save_model
from models.datasets import AudioSource, DatasetError, SynthSource, open_source
from models.errors import ConfigError, DDError
from models.network import DiffusionAttnUnet1D
from models.train import Every, Trainer, TrainOptions, add_categories
from tests.reference_nets import tiny_config

RATE, SIZE = 16000, 768
FAST = dict(batch_size=2, checkpoint_every="0", threads=1, device="cpu", log_every=1)


def synth_config(**kw):
    from models.synth import CATEGORIES

    return tiny_config(categories=CATEGORIES, **kw)


def synth_source(seed=0):
    return SynthSource(sample_rate=RATE, sample_size=SIZE, seed=seed)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def write_folder(root, categories=("hat", "kick"), per=2):
    for c, cat in enumerate(categories):
        for i in range(per):
            n = 400 + 300 * i
            x = 0.4 * np.sin(2 * np.pi * (80 + 200 * c + 30 * i) * np.arange(n) / RATE)
            (root / cat).mkdir(parents=True, exist_ok=True)
            sf.write(root / cat / f"{cat}{i}.wav", x.astype(np.float32), RATE)
    return root


class ConstantSource(AudioSource):
    """The same sound for every item: trivially learnable."""

    kind = "constant"

    def __init__(self) -> None:
        super().__init__(RATE, SIZE, 2, (), seed=0)
        t = np.arange(SIZE) / RATE
        self.audio = np.stack([0.5 * np.sin(2 * np.pi * 250 * t)] * 2).astype(np.float32)

    def raw_item(self, index):
        return self.audio, None


def test_trains_on_synth_and_checkpoint_is_plain(tmp_path):
    trainer = Trainer(synth_config(), synth_source(), TrainOptions(steps=3, **FAST), tmp_path / "run")
    result = trainer.run()
    assert result.step == 3 and np.isfinite(result.loss) and result.reason == "done"
    state = safe_torch_load(result.checkpoint)  # weights_only=True: plain containers only
    assert state["step"] == 3 and state["data"]["kind"] == "synth" and len(state["history"]) == 3
    assert state["config"]["categories"][0] == "kick"
    lines = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss") and len(lines) == 4


def test_trains_on_a_folder_with_two_categories(tmp_path):
    source = open_source("folder", path=write_folder(tmp_path / "data"), sample_rate=RATE, sample_size=SIZE)
    config = tiny_config(categories=source.categories)
    result = Trainer(config, source, TrainOptions(steps=2, **FAST), tmp_path / "run").run()
    assert result.step == 2 and np.isfinite(result.loss)


def test_trains_on_nsynth(tmp_path):
    root = tmp_path / "nsynth"
    (root / "audio").mkdir(parents=True)
    meta = {}
    for i, fam in enumerate(["bass", "flute", "bass"]):
        name = f"{fam}_x_{i:03d}-060-100"
        meta[name] = {"instrument_family_str": fam}
        sf.write(root / "audio" / f"{name}.wav", np.sin(np.arange(2000) * 0.05 * (i + 1)).astype(np.float32), RATE)
    (root / "examples.json").write_text(json.dumps(meta))
    source = open_source("nsynth", path=root, sample_rate=RATE, sample_size=SIZE)
    result = Trainer(tiny_config(categories=("bass", "flute")), source, TrainOptions(steps=2, **FAST),
                     tmp_path / "run").run()
    assert result.step == 2 and np.isfinite(result.loss)


def test_loss_decreases_on_constant_data(tmp_path):
    opts = TrainOptions(steps=30, lr=2e-3, batch_size=4, checkpoint_every="0", threads=1, device="cpu",
                        log_every=10, t_sampling="stratified")
    trainer = Trainer(tiny_config(), ConstantSource(), opts, tmp_path / "run")
    trainer.run()
    first, last = trainer.history[0][1], trainer.history[-1][1]
    assert last < 0.7 * first, trainer.history


def test_resume_is_bit_exact(tmp_path):
    opts = TrainOptions(steps=6, ema_warmup=2, **FAST)
    straight = Trainer(synth_config(), synth_source(), opts, tmp_path / "a")
    straight.run()
    half = Trainer(synth_config(), synth_source(), TrainOptions(steps=3, ema_warmup=2, **FAST), tmp_path / "b")
    half.run()
    resumed = Trainer.resume(tmp_path / "b", overrides={"steps": 6})
    assert resumed.step == 3
    resumed.run()
    assert resumed.step == 6
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert states_equal(straight.ema.state_dict(), resumed.ema.state_dict())
    # and a different seed really gives different weights (the check above can fail)
    other = Trainer(synth_config(), synth_source(1), TrainOptions(steps=1, seed=1, **FAST), tmp_path / "c")
    other.run()
    assert not states_equal(straight.model.state_dict(), other.model.state_dict())


def test_killed_run_loses_no_steps(tmp_path):
    base = dict(FAST, checkpoint_every="2")
    straight = Trainer(synth_config(), synth_source(), TrainOptions(steps=5, **base), tmp_path / "a")
    straight.run()

    class Killed(Exception):
        pass

    def kill_at_step_3(trainer, loss):  # dies after step 3, before any checkpoint of it
        if trainer.step == 3:
            raise Killed

    victim = Trainer(synth_config(), synth_source(), TrainOptions(steps=5, **base), tmp_path / "b")
    with pytest.raises(Killed):
        victim.run(on_step=kill_at_step_3)
    assert safe_torch_load(tmp_path / "b" / "last.ckpt")["step"] == 2  # the last periodic checkpoint
    resumed = Trainer.resume(tmp_path / "b")  # a new trainer, as a new process would build
    result = resumed.run()
    assert result.step == 5
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert states_equal(straight.ema.state_dict(), resumed.ema.state_dict())


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run as a background job
    trainer = Trainer(synth_config(), synth_source(), TrainOptions(steps=50, **FAST), tmp_path / "run")

    def press_ctrl_c(trainer, loss):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    result = trainer.run(on_step=press_ctrl_c)
    assert result.reason == "interrupted" and result.step == 2
    assert safe_torch_load(result.checkpoint)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_export_loads_back_and_generates(tmp_path):
    from models.generate import SamplingOptions, generate
    from models.torch_backend import TorchBackend

    export = tmp_path / "model.safetensors"
    opts = TrainOptions(steps=2, export_path=str(export), half=True, demo_every="2", demo_steps=2, demo_count=2,
                        **FAST)
    trainer = Trainer(synth_config(), synth_source(), opts, tmp_path / "run")
    result = trainer.run()
    assert result.export == export
    weights = load_weights(export)
    assert weights.config.categories == trainer.config.categories
    for key, value in trainer.ema.state_dict().items():
        if not key.endswith(".kernel"):
            torch.testing.assert_close(weights.state[key], value.half().float())
    backend = TorchBackend.load(export, device="cpu")
    audio = generate(backend, [1], category="kick", options=SamplingOptions(steps=3))
    assert audio.shape == (1, 2, SIZE) and np.isfinite(audio).all()
    demos = sorted(p.name for p in (tmp_path / "run" / "demos" / "step_0000002").iterdir())
    assert demos == ["fx_1.wav", "kick_0.wav"]


def harmonai_ckpt(path, seed=0):
    config = tiny_config()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DiffusionAttnUnet1D(config)
    state = {f"diffusion_ema.{k}": v for k, v in net.state_dict().items()}
    state.update({f"diffusion.{k}": v + 1 for k, v in net.state_dict().items()})
    torch.save({"state_dict": state, "global_step": 10}, path)
    return net


def test_finetune_harmonai_ckpt_via_cli(tmp_path, capsys):
    ckpt = tmp_path / "tiny-10k.ckpt"
    harmonai_ckpt(ckpt)
    data = write_folder(tmp_path / "data")
    export = tmp_path / "ft.safetensors"
    argv = ["train", "--init", str(ckpt), "--data", str(data), "--sample-rate", str(RATE), "--sample-size",
            str(SIZE), "--steps", "2", "--batch-size", "2", "--run-dir", str(tmp_path / "run"), "--export",
            str(export), "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "unconditional: training without the data's categories" in out
    weights = load_weights(export)
    assert weights.config.categories == () and weights.config.sample_rate == RATE
    state = safe_torch_load(tmp_path / "run" / "last.ckpt")
    assert state["options"]["lr"] == 4e-5 and state["init"] == str(ckpt)

    export2 = tmp_path / "ft2.safetensors"
    argv2 = [a if a != str(export) else str(export2) for a in argv]
    argv2[argv2.index(str(tmp_path / "run"))] = str(tmp_path / "run2")
    assert main(argv2 + ["--add-categories"]) == 0
    assert load_weights(export2).config.categories == ("hat", "kick")


def test_add_categories_keeps_the_pretrained_output():
    config = tiny_config()
    net = DiffusionAttnUnet1D(config).eval()
    new_config, state = add_categories(config, net.state_dict(), ("a", "b"))
    grown = DiffusionAttnUnet1D(new_config).eval()
    grown.load_state_dict(state)
    x, t = torch.randn(2, 2, SIZE), torch.tensor([0.3, 0.8])
    torch.testing.assert_close(grown(x, t, torch.tensor([0, 1])), net(x, t), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="already has categories"):
        add_categories(new_config, state, ("c",))


def test_finetune_with_mismatched_categories(tmp_path):
    own = tmp_path / "own.safetensors"
    save_model(DiffusionAttnUnet1D(tiny_config(categories=("bass", "lead"))), own)
    data = write_folder(tmp_path / "data")
    code = main(["train", "--init", str(own), "--data", str(data), "--steps", "1", "--run-dir", str(tmp_path / "r"),
                 "--export", str(tmp_path / "x.safetensors"), "--device", "cpu"])
    assert code == 2
    source = open_source("folder", path=data, sample_rate=RATE, sample_size=SIZE)
    with pytest.raises(DatasetError, match=r"\['hat', 'kick'\].*\['bass', 'lead'\]"):
        Trainer(load_weights(own).config, source, TrainOptions(steps=1, **FAST), tmp_path / "r2")


@pytest.mark.parametrize("loops", [False, True])
def test_finetunes_keep_the_one_shot_fade_but_loops_drop_it(tmp_path, loops, capsys):
    own = tmp_path / "own.safetensors"
    save_model(DiffusionAttnUnet1D(tiny_config(categories=("hat", "kick"), fade_out_ms=50.0)), own)
    data, export = write_folder(tmp_path / "data"), tmp_path / "ft.safetensors"
    argv = ["train", "--init", str(own), "--data", str(data), "--steps", "1", "--batch-size", "2", "--run-dir",
            str(tmp_path / "r"), "--export", str(export), "--device", "cpu", "--threads", "1"]
    assert main(argv + (["--random-crop"] if loops else [])) == 0
    assert load_weights(export).config.fade_out_ms == (0.0 if loops else 50.0)
    assert ("end fade for one-shots is turned off" in capsys.readouterr().out) == loops


def test_cli_end_to_end_and_resume(tmp_path, capsys):
    run_dir, export = tmp_path / "run", tmp_path / "m.safetensors"
    argv = ["train", "--synth", "--config", "tiny", "--sample-size", str(SIZE), "--steps", "3", "--batch-size", "2",
            "--run-dir", str(run_dir), "--export", str(export), "--checkpoint-every", "2", "--device", "cpu",
            "--threads", "1", "--name", "My Model"]
    assert main(argv) == 0
    assert load_weights(export).config.name == "My-Model"
    assert safe_torch_load(run_dir / "last.ckpt")["step"] == 3
    capsys.readouterr()
    assert main([a if a != "3" else "4" for a in argv]) == 0  # same command, more steps: resumes
    assert "resuming" in capsys.readouterr().out
    assert safe_torch_load(run_dir / "last.ckpt")["step"] == 4
    assert main(argv[:-2] + ["--batch-size", "4", "--steps", "5"]) == 2  # cannot change the batch on resume
    assert "batch_size 2 -> 4" in capsys.readouterr().err
    assert main(argv + ["--fresh"]) == 0
    assert (run_dir / "last.ckpt.old").is_file() and safe_torch_load(run_dir / "last.ckpt")["step"] == 3
    assert main(["train", "--resume", "--run-dir", str(tmp_path / "none")]) == 2


def test_cli_needs_data(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--data DIR, --nsynth DIR or --synth" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(tmp_path):
    Trainer(synth_config(), synth_source(), TrainOptions(steps=1, **FAST), tmp_path).run()
    with pytest.raises(DDError, match="already holds a training run"):
        Trainer(synth_config(), synth_source(), TrainOptions(steps=1, **FAST), tmp_path)


def test_option_validation():
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        TrainOptions(batch_size=0)
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        TrainOptions(ema_decay=1.0)
    with pytest.raises(ConfigError, match="t_sampling must be one of"):
        TrainOptions(t_sampling="uniform")
    with pytest.raises(ConfigError, match="checkpoint_every must be a number of steps.*got 'soon'"):
        TrainOptions(checkpoint_every="soon")
    assert Every.parse("10m") == Every(minutes=10.0) and Every.parse("250") == Every(steps=250)
    assert Every.parse("250").due(500, 0) and not Every.parse("10m").due(1, 599) and Every.parse("10m").due(1, 600)


def test_half_precision_only_on_cuda(tmp_path):
    with pytest.raises(ConfigError, match="only supported on CUDA"):
        Trainer(synth_config(), synth_source(), TrainOptions(steps=1, precision="bf16", device="cpu"), tmp_path)


def test_lr_drops_lower_the_lr_from_their_step_on(tmp_path):
    options = TrainOptions(steps=8, lr=3e-4, lr_warmup=2, lr_drops=[[4, 1e-4], [6, 5e-5]], **{
        k: v for k, v in FAST.items() if k not in ("steps", "lr", "lr_warmup")})
    assert options.lr_drops == ((4, 1e-4), (6, 5e-5))
    trainer = Trainer(synth_config(), synth_source(), options, tmp_path / "run")
    assert [trainer._lr(s) for s in (0, 1, 3, 4, 5, 6, 100)] == [1.5e-4, 3e-4, 3e-4, 1e-4, 1e-4, 5e-5, 5e-5]
    trainer.run()
    assert trainer.optimizer.param_groups[0]["lr"] == 5e-5  # what the optimizer actually used last
    with pytest.raises(ConfigError, match="lr_drops must be"):
        TrainOptions(lr_drops=((10, 1e-4), (5, 5e-5)))
    with pytest.raises(ConfigError, match="lr_drops must be"):
        TrainOptions(lr_drops=((10, 0.0),))


def test_default_recipe_runs_its_three_stages_in_order(tmp_path, monkeypatch):
    """Each stage until its model exists and its run is finished, then the next from that model."""
    import argparse

    from companion.cli import train as cmd_train
    from models.default_recipe import (
        DEFAULT_CONFIG,
        DEFAULT_RECIPE,
        STAGE1_CONFIG,
        STAGE1_RECIPE,
        STAGE2_CONFIG,
        STAGE2_RECIPE,
    )

    runs = tmp_path / "runs"
    dirs = {1: runs / "default", 2: runs / "default-v2", 3: runs / "default-v4"}
    exports = {1: dirs[1] / "v1.safetensors", 2: dirs[2] / "v3.safetensors"}
    for n in (1, 2):
        monkeypatch.setattr(cmd_train, f"STAGE{n}_RUN_DIR", str(dirs[n]))
        monkeypatch.setattr(cmd_train, f"STAGE{n}_EXPORT", str(exports[n]))
    monkeypatch.setattr(cmd_train, "DEFAULT_RUN_DIR", str(dirs[3]))

    def stage() -> argparse.Namespace:
        args = argparse.Namespace(init=None, config=None, data=None, nsynth=None, synth=False, run_dir=None,
                                  export=None, level_cond=False, recipe="default")
        cmd_train._recipe_stage(args)
        return args

    def finish(n: int, recipe: dict, early: bool = False) -> None:
        dirs[n].mkdir(parents=True, exist_ok=True)
        torch.save({"step": recipe["steps"] - early}, dirs[n] / "last.ckpt")
        exports[n].write_bytes(b"an export")

    first = stage()
    assert (first.recipe_stage, first.config, first.run_dir, first.export) == (1, "default-v1", dirs[1], exports[1])
    assert first.recipe_options is STAGE1_RECIPE and cmd_train.CONFIGS["default-v1"] == STAGE1_CONFIG
    finish(1, STAGE1_RECIPE, early=True)  # an export written when a run was stopped early
    assert stage().recipe_stage == 1  # its checkpoint is not finished: stage 1 resumes
    finish(1, STAGE1_RECIPE)
    second = stage()
    assert (second.recipe_stage, second.init, second.level_cond, second.run_dir, second.export) == (
        2, str(exports[1]), True, dirs[2], exports[2])
    assert second.recipe_options is STAGE2_RECIPE and STAGE2_RECIPE["label_dropout"] > 0
    assert STAGE2_CONFIG.level_cond and not STAGE1_CONFIG.level_cond and STAGE2_CONFIG.guidance == 2.0
    finish(2, STAGE2_RECIPE, early=True)
    assert stage().recipe_stage == 2
    finish(2, STAGE2_RECIPE)
    third = stage()
    assert (third.recipe_stage, third.init, third.run_dir) == (3, str(exports[2]), dirs[3])
    assert third.export == Path(cmd_train.DEFAULT_EXPORT)
    assert third.recipe_options is DEFAULT_RECIPE and DEFAULT_RECIPE["distill_guidance"] == STAGE2_CONFIG.guidance
    assert DEFAULT_CONFIG.guidance == 1.0 and DEFAULT_CONFIG.level_cond  # the guidance is built in
    with pytest.raises(ConfigError, match="drop --init, --config, --data and --nsynth"):
        args = argparse.Namespace(init="x.ckpt", config=None, data=None, nsynth=None)
        cmd_train._recipe_stage(args)


def test_an_extended_recipe_resumes_its_finished_run(tmp_path, monkeypatch, capsys):
    """A recipe given more steps (and a later lr drop) continues its finished run from the checkpoint."""
    from dataclasses import replace

    from companion.cli import train as cmd_train

    run_dir, export = tmp_path / "runs" / "default", tmp_path / "runs" / "default" / "v1.safetensors"
    monkeypatch.setattr(cmd_train, "STAGE1_RUN_DIR", str(run_dir))
    monkeypatch.setattr(cmd_train, "STAGE1_EXPORT", str(export))
    tiny = replace(synth_config(), sample_rate=RATE, sample_size=SIZE)
    monkeypatch.setitem(cmd_train.CONFIGS, "default-v1", tiny)
    recipe = dict(steps=2, lr=1e-3, batch_size=2, accum=1, seed=3, threads=1, device="cpu", checkpoint_every="0")
    monkeypatch.setattr(cmd_train, "STAGE1_RECIPE", recipe)
    assert main(["train", "--recipe", "default"]) == 0
    first = safe_torch_load(run_dir / "last.ckpt")
    assert first["step"] == 2 and export.is_file()
    monkeypatch.setattr(cmd_train, "STAGE1_RECIPE", {**recipe, "steps": 4, "lr_drops": ((3, 1e-4),)})
    capsys.readouterr()
    assert main(["train", "--recipe", "default"]) == 0
    assert "resuming" in capsys.readouterr().out
    second = safe_torch_load(run_dir / "last.ckpt")
    assert second["step"] == 4 and [list(d) for d in second["options"]["lr_drops"]] == [[3, 1e-4]]
    assert second["optimizer"]["param_groups"][0]["lr"] == 1e-4  # the drop the extension added took effect

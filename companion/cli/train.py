"""``dd-companion train``: train a model from scratch or fine-tune one on a sample folder, NSynth or the synth.

A run lives in a folder (``--run-dir``, default ``./runs/<name>``) holding ``last.ckpt`` (the whole training
state), ``log.csv`` (the loss curve) and ``demos/``. Running the same command again resumes the run where
its last checkpoint left it; ``--fresh`` starts over (the old checkpoint is kept as ``last.ckpt.old``).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.config import ModelConfig, harmonai_config
from models.datasets import DatasetError, open_source
from models.default_recipe import (
    DEFAULT_CONFIG,
    DEFAULT_EXPORT,
    DEFAULT_RECIPE,
    DEFAULT_RUN_DIR,
    STAGE1_CONFIG,
    STAGE1_EXPORT,
    STAGE1_RECIPE,
    STAGE1_RUN_DIR,
    STAGE2_CONFIG,
    STAGE2_EXPORT,
    STAGE2_RECIPE,
    STAGE2_RUN_DIR,
)
from models.errors import ConfigError

FINETUNE_LR = 4e-5  # Harmonai's lr: small steps keep what a pretrained model knows
SCRATCH_LR = 2e-4  # small networks from scratch learn several times faster (see models/default_recipe.py)
SCRATCH_WARMUP = 200
TINY_CONFIG = ModelConfig(name="tiny", sample_rate=16000, sample_size=8192, depth=5, c_mults=(16, 32, 32, 32, 32),
                          n_attn_layers=1)
RECIPE_STAGES = 3
RECIPE_CONFIGS = {1: STAGE1_CONFIG, 2: STAGE2_CONFIG, 3: DEFAULT_CONFIG}  # what each stage of the recipe exports
CONFIGS = {"default": DEFAULT_CONFIG, "default-v1": STAGE1_CONFIG, "tiny": TINY_CONFIG, "harmonai": harmonai_config()}
# CLI flag -> TrainOptions field; None on the command line means "not given"
OPTION_FLAGS = {
    "steps": "steps", "batch_size": "batch_size", "accum": "accum", "lr": "lr", "lr_warmup": "lr_warmup",
    "ema_decay": "ema_decay", "ema_warmup": "ema_warmup", "grad_clip": "grad_clip", "seed": "seed",
    "gain_db": "gain_db", "checkpoint_every": "checkpoint_every", "demo_every": "demo_every",
    "demo_steps": "demo_steps", "export_every": "export_every", "half": "half", "max_minutes": "max_minutes",
    "device": "device", "precision": "precision", "threads": "threads", "t_sampling": "t_sampling",
    "label_dropout": "label_dropout", "distill_guidance": "distill_guidance",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune a model",
        description="Train a model from scratch or fine-tune one (--init) on a folder of samples (category = "
                    "first-level subfolder), an NSynth folder, or the built-in synthesizer. Re-running the "
                    "same command resumes the run from its last checkpoint.")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", type=Path, metavar="DIR", help="folder of audio files, one subfolder per category")
    data.add_argument("--nsynth", type=Path, metavar="DIR", help="NSynth folder (examples.json + audio/)")
    data.add_argument("--synth", action="store_true", help="endless fresh sounds from the built-in synthesizer")
    p.add_argument("--recipe", choices=("default",), help="the shipped default model's recipe (synth data, "
                   "default config, runs/default, export to the packaged model); other flags override it")
    p.add_argument("--init", metavar="MODEL", help="fine-tune this model (.ckpt, diffusers folder, .safetensors)")
    p.add_argument("--config", choices=sorted(CONFIGS), help="architecture for training from scratch (default: "
                   "default)")
    p.add_argument("--add-categories", action="store_true",
                   help="give an unconditional --init model the data's categories (new, zero-initialised inputs)")
    p.add_argument("--level-cond", action="store_true",
                   help="give an --init model per-level time and category conditioning (new maps start at zero)")
    p.add_argument("--label-dropout", type=float, metavar="P",
                   help="train this share of items without their category, so the model can be guided "
                        "(classifier-free guidance; 0.1-0.2 is usual; default 0)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help="the guidance scale the exported model recommends (1 = none; needs --label-dropout > 0 "
                        "in training)")
    p.add_argument("--distill-guidance", type=float, metavar="W",
                   help="guidance distillation: fine-tune an --init model (trained with label dropout) to give in "
                        "one call what guidance W gave in two; the result needs half the network calls (1.5-1.9x "
                        "faster on the default model) and recommends no further guidance")
    p.add_argument("--sample-rate", type=int, help="model sample rate (from scratch), or the rate of a Harmonai "
                   ".ckpt not in the known table; files are resampled to it")
    p.add_argument("--sample-size", type=int, help="training window in samples (multiple of the model's factor)")
    p.add_argument("--steps", type=int, help="optimizer steps in total (default 10000)")
    p.add_argument("--batch-size", type=int, help="items per micro-batch (default 8)")
    p.add_argument("--accum", type=int, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {FINETUNE_LR:g} with --init, "
                   f"{SCRATCH_LR:g} from scratch)")
    p.add_argument("--lr-warmup", type=int, help=f"linear lr warm-up steps (default 0 with --init, {SCRATCH_WARMUP}"
                   " from scratch)")
    p.add_argument("--ema-decay", type=float, help="EMA decay after warm-up (default 0.995)")
    p.add_argument("--ema-warmup", type=int, help="steps with EMA decay 0.95 (default 500)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this (default off)")
    p.add_argument("--gain-db", type=float, help="random gain of +-this many dB per item (default 0 = off)")
    p.add_argument("--t-sampling", choices=("sobol", "stratified"), help="how u is drawn (default sobol)")
    p.add_argument("--random-crop", action="store_true", help="random window of longer files (loops); default: "
                   "from the start (one-shots)")
    p.add_argument("--unconditional", action="store_true", help="ignore category folders")
    p.add_argument("--strict-files", action="store_true", help="stop on an unreadable file instead of skipping it")
    p.add_argument("--name", help="model name (default: from the data or --init)")
    p.add_argument("--run-dir", type=Path, help="run folder (default ./runs/<name>)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="require a checkpoint to resume (the default is to "
                        "resume when the run folder has one)")
    resume.add_argument("--fresh", action="store_true", help="start over even if the run folder has a checkpoint")
    p.add_argument("--checkpoint-every", help="save the training state every N steps or Nm minutes (default 1000)")
    p.add_argument("--demo-every", help="write demo sounds every N steps or Nm minutes (default off)")
    p.add_argument("--demo-steps", type=int, help="sampler steps for demos (default 50)")
    p.add_argument("--export", type=Path, metavar="PATH", help="where the EMA model goes (default: the user "
                   "model folder, <name>.safetensors)")
    p.add_argument("--export-every", help="also export every N steps or Nm minutes (default: only at the end)")
    p.add_argument("--half", action="store_true", default=None, help="export fp16 weights")
    p.add_argument("--max-minutes", type=float, help="stop cleanly after this many minutes (checkpoint + export)")
    p.add_argument("--seed", type=int, help="seed of weights, data order and noise (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast on CUDA (default fp32)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(run=run)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def _data_kind(args: argparse.Namespace) -> tuple[str, Path | None] | None:
    if args.data:
        return "folder", args.data
    if args.nsynth:
        return "nsynth", args.nsynth
    if args.synth:
        return "synth", None
    return None


def _default_name(args: argparse.Namespace, data: tuple[str, Path | None] | None) -> str:
    if args.name:
        return _slug(args.name)
    if args.recipe:
        return RECIPE_CONFIGS[args.recipe_stage].name
    if args.init:
        return _slug(Path(args.init).stem or Path(args.init).name) + "-ft"
    if data and data[1] is not None:
        return _slug(data[1].resolve().name)
    return "synth-model"


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {field: getattr(args, flag) for flag, field in OPTION_FLAGS.items() if getattr(args, flag) is not None}
    if args.export is not None:
        given["export_path"] = str(args.export)
    return given


def run(args: argparse.Namespace) -> int:
    from models.train import CHECKPOINT_NAME, Trainer  # torch is imported only when training

    args.recipe_stage = 0
    if args.recipe:
        _recipe_stage(args)
    data = _data_kind(args)
    name = _default_name(args, data)
    run_dir = args.run_dir or Path("runs") / name
    given = _given_options(args)
    if args.recipe:
        # a resumed recipe run follows the recipe as it is now (a recipe may be extended by more steps);
        # flags given on the command line still win
        given = {**args.recipe_options, **given}
    if (run_dir / CHECKPOINT_NAME).is_file() and not args.fresh:
        # the data given again on the command line is used (it may have moved); the run checks it matches
        data_path = data[1] if data is not None else None
        trainer = Trainer.resume(run_dir, data_path=data_path, overrides=given)
        print(f"resuming '{run_dir}' at step {trainer.step} of {trainer.options.steps}")
    else:
        if args.resume:
            raise ConfigError(f"--resume given but '{run_dir / CHECKPOINT_NAME}' does not exist")
        trainer = _new_run(args, data, name, run_dir, given)
    if args.recipe_stage >= 2:
        # what the shipped model recommends (sampler, steps, guidance) was measured after training; a resumed
        # run exports with the recipe's current values
        stage_config = RECIPE_CONFIGS[args.recipe_stage]
        if not _same_network(trainer.config, stage_config):
            raise ConfigError(f"'{run_dir}' holds another model than the default recipe's stage {args.recipe_stage}")
        trainer.config = stage_config
    print(f"training '{trainer.config.name}' on {trainer.source.describe()}; run folder {run_dir}")
    result = trainer.run()
    loss = f"loss {result.loss:.4f}, " if math.isfinite(result.loss) else ""  # no step taken: no loss
    print(f"{result.reason} at step {result.step} ({loss}{result.seconds / 60:.1f} min)")
    print(f"checkpoint: {result.checkpoint}")
    if result.export:
        print(f"model: {result.export}")
    if args.recipe_stage and args.recipe_stage < RECIPE_STAGES and result.reason == "done":
        print(f"stage {args.recipe_stage} of {RECIPE_STAGES} is done; run the same command again for stage "
              f"{args.recipe_stage + 1}")
    elif args.recipe_stage and result.reason != "done":
        print(f"stage {args.recipe_stage} of {RECIPE_STAGES} is not finished; run the same command again to "
              "resume it")
    return 130 if result.reason == "interrupted" else 0


def _same_network(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two configs describe the same network and data, whatever their names, notes and recommendations."""
    def core(c: ModelConfig) -> ModelConfig:
        return replace(c, name="", notes="", license="", sampler=None, steps=None, guidance=1.0,
                       guidance_interval=(0.0, 1.0), sigma_max=None, rho=None, tail_gate_db=0.0,
                       low_cut_hz=(), high_cut_hz=(), fade_in_ms=())

    return core(a) == core(b)


def _checkpoint_step(path: Path) -> int:
    from models.checkpoints import safe_torch_load

    return int(safe_torch_load(path)["step"])


def _recipe_stage(args: argparse.Namespace) -> None:
    """Point ``args`` at the default recipe's next stage (see :mod:`models.default_recipe`).

    Stage 1 trains the plain network from scratch into ``STAGE1_EXPORT``; stage 2 fine-tunes it, with
    per-level conditioning and label dropout, into ``STAGE2_EXPORT``; stage 3 distils stage 2's guidance
    into the packaged model. A stage is done when its export exists and no unfinished checkpoint remains.
    """
    if args.init or args.config or args.data or args.nsynth:
        raise ConfigError("--recipe default trains on the synthesizer with its own architecture and start; "
                          "drop --init, --config, --data and --nsynth")
    args.synth = True
    if _pending(STAGE1_RUN_DIR, STAGE1_EXPORT, STAGE1_RECIPE):
        args.recipe_stage, args.config, args.recipe_options = 1, "default-v1", STAGE1_RECIPE
        args.run_dir = args.run_dir or Path(STAGE1_RUN_DIR)
        args.export = Path(STAGE1_EXPORT)
    elif _pending(STAGE2_RUN_DIR, STAGE2_EXPORT, STAGE2_RECIPE):
        args.recipe_stage, args.init, args.level_cond, args.recipe_options = 2, STAGE1_EXPORT, True, STAGE2_RECIPE
        args.run_dir = args.run_dir or Path(STAGE2_RUN_DIR)
        args.export = Path(STAGE2_EXPORT)
    else:
        args.recipe_stage, args.init, args.recipe_options = 3, STAGE2_EXPORT, DEFAULT_RECIPE
        args.run_dir = args.run_dir or Path(DEFAULT_RUN_DIR)
        args.export = args.export or Path(DEFAULT_EXPORT)
    print(f"default recipe, stage {args.recipe_stage} of {RECIPE_STAGES}")


def _pending(run_dir: str, export: str, recipe: dict[str, Any]) -> bool:
    """Whether a recipe stage still has to run: no export yet, or a checkpoint short of the recipe's steps."""
    from models.train import CHECKPOINT_NAME

    checkpoint = Path(run_dir) / CHECKPOINT_NAME
    return not Path(export).is_file() or (checkpoint.is_file() and _checkpoint_step(checkpoint) < recipe["steps"])


def _new_run(args: argparse.Namespace, data: tuple[str, Path | None] | None, name: str, run_dir: Path,
             given: dict[str, Any]) -> Any:
    """A new :class:`models.train.Trainer`: from scratch (``--config``) or from ``--init`` weights."""
    from models.checkpoints import load_weights
    from models.registry import user_models_dir
    from models.train import Trainer, TrainOptions, add_categories, add_level_cond

    if data is None:
        raise ConfigError("choose the training data: --data DIR, --nsynth DIR or --synth")
    defaults: dict[str, Any] = dict(args.recipe_options) if args.recipe else {}
    seed = {**defaults, **given}.get("seed", 0)
    state = None
    if args.init:
        if args.config:
            raise ConfigError("--config is for training from scratch; a fine-tune keeps the --init model's "
                              "architecture")
        weights = load_weights(args.init, sample_rate=args.sample_rate, sample_size=args.sample_size)
        config, state = weights.config, weights.state
        print(f"fine-tuning '{config.name}' ({weights.format}, {config.sample_rate} Hz, {config.sample_size} "
              "samples)")
    else:
        config = CONFIGS[args.config or "default"]
        overrides = {k: v for k, v in (("sample_rate", args.sample_rate), ("sample_size", args.sample_size))
                     if v is not None}
        config = replace(config, **overrides) if overrides else config
    kind, path = data
    source = open_source(kind, path=path, sample_rate=config.sample_rate, sample_size=config.sample_size,
                         channels=config.channels, random_crop=args.random_crop, unconditional=args.unconditional,
                         seed=seed, skip_bad=not args.strict_files)
    unconditional = args.unconditional
    if state is None:
        config = replace(config, name=name if (args.name or not args.recipe) else config.name,
                         categories=source.categories, low_cut_hz=(), high_cut_hz=(), fade_in_ms=())
        if not args.recipe:
            config = replace(config, license="", notes=f"trained by dd-companion on {source.describe()}")
    elif not config.categories and source.categories:
        if args.add_categories:
            config, state = add_categories(config, state, source.categories, seed=seed)
            print(f"added categories {list(source.categories)} to '{config.name}' (new inputs start at zero)")
        else:
            print(f"'{config.name}' is unconditional: training without the data's categories "
                  f"{list(source.categories)} (use --add-categories to learn them)")
            unconditional = True
    elif args.add_categories:
        raise DatasetError(f"--add-categories needs an unconditional --init model and categorized data; model "
                           f"categories {list(config.categories)}, data categories {list(source.categories)}")
    if args.level_cond:
        if state is None:
            config = replace(config, level_cond=True)
        elif not config.level_cond:
            config, state = add_level_cond(config, state, seed=seed)
            print(f"added per-level conditioning to '{config.name}' (new maps start at zero)")
    if args.recipe_stage >= 2:
        if not _same_network(config, RECIPE_CONFIGS[args.recipe_stage]):
            earlier = args.recipe_stage - 1
            raise ConfigError(f"'{args.init}' is not the recipe's stage-{earlier} model; remove it to train stage "
                              f"{earlier}")
        config = RECIPE_CONFIGS[args.recipe_stage]
    if args.guidance is not None:
        if args.distill_guidance:
            raise ConfigError(f"--guidance {args.guidance:g} sets the guidance a model recommends; a model made with "
                              "--distill-guidance has its guidance built in and recommends none")
        config = replace(config, guidance=args.guidance)
    if state is not None and args.name:
        config = replace(config, name=name)
    if args.random_crop and config.fade_out_ms:
        print(f"loops (--random-crop): the model's {config.fade_out_ms:g} ms end fade for one-shots is turned off")
        config = replace(config, fade_out_ms=0.0)
    if not args.recipe:
        defaults.update(lr=FINETUNE_LR if state is not None else SCRATCH_LR,
                        lr_warmup=0 if state is not None else SCRATCH_WARMUP)
    defaults["export_path"] = str(user_models_dir() / f"{name}.safetensors")
    options = TrainOptions(**{**defaults, **given})
    # (a distillation's Trainer sets the recommendation to none itself: the guidance is built in)
    if config.guidance != 1.0 and not options.label_dropout and not options.distill_guidance:
        if args.guidance is not None:
            raise ConfigError(f"--guidance {args.guidance:g} needs a model trained with --label-dropout > 0")
        print(f"no label dropout: the model will not recommend guidance (was {config.guidance:g})")
        config = replace(config, guidance=1.0)
    return Trainer(config, source, options, run_dir, init_state=state, init_from=str(args.init or ""),
                       unconditional=unconditional, fresh=args.fresh)

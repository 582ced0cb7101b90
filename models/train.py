"""Training and fine-tuning: Dance Diffusion's v-objective on the crash schedule, EMA, checkpoints, resume.

One optimizer step: for each of ``accum`` micro-batches, take items ``micro * batch .. + batch`` of the
source, draw u from a scrambled Sobol sequence (or stratified uniform), map it through crash to
sigma = sin^2(pi u / 2), alpha = sqrt(1 - sigma^2), condition the network on t' = atan2(sigma, alpha) * 2/pi,
and regress v = alpha * eps - sigma * x0 with plain MSE. Adam, optional warm-up and clipping, then the
EMA (0.95 during warm-up, ``ema_decay`` after).

Determinism: every random draw is a pure function of the seed and the micro-batch index (data items,
their crops and phase flips, the noise), and the Sobol sequence is fast-forwarded to its position, so a
resumed run continues bit for bit where the checkpoint left it; the checkpoint need not hold generator
states. Nothing touches torch's or NumPy's global generators (the initial weights are drawn inside
``torch.random.fork_rng``).

The training state ``<run_dir>/last.ckpt`` holds only tensors and plain containers and is read back with
``safe_torch_load`` (``weights_only=True``); it is written to a temporary file and renamed, so a kill at
any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoints import load_strict, safe_torch_load, save_model
from models.config import MAX_GUIDANCE, TIME_FEATURES, ModelConfig
from models.datasets import (
    AudioSource,
    DatasetError,
    fit_to_model,
    make_batch,
    measure_finish,
    open_source,
)
from models.errors import CheckpointError, ConfigError, DDError
from models.network import DiffusionAttnUnet1D
from models.schedules import crash_t

log = logging.getLogger("dd.train")

CHECKPOINT_NAME = "last.ckpt"
CHECKPOINT_FORMAT = "dd-companion-train"
CHECKPOINT_VERSION = 1
T_SAMPLING = ("sobol", "stratified")
PRECISIONS = ("fp32", "bf16", "fp16")
# options that define what a run computes; changing them on resume would silently make another run
RUN_IDENTITY = ("batch_size", "accum", "seed", "t_sampling", "gain_db", "distill_guidance")


class TrainingError(DDError):
    """Training cannot go on (the loss diverged)."""

    code = "training_failed"


@dataclass(frozen=True)
class Every:
    """An interval in optimizer steps ("500") or wall-clock minutes ("10m"); "0" is never."""

    steps: int = 0
    minutes: float = 0.0

    @classmethod
    def parse(cls, text: str | int, name: str = "interval") -> Every:
        raw = str(text).strip().lower()
        try:
            if raw.endswith("m"):
                minutes = float(raw[:-1])
                if not math.isfinite(minutes) or minutes < 0:
                    raise ValueError
                return cls(minutes=minutes)
            steps = int(raw)
            if steps < 0:
                raise ValueError
            return cls(steps=steps)
        except ValueError:
            raise ConfigError(f"{name} must be a number of steps (e.g. 500) or of minutes (e.g. 10m), "
                              f"got '{text}'") from None

    @property
    def enabled(self) -> bool:
        return self.steps > 0 or self.minutes > 0

    def due(self, step: int, since_last_s: float) -> bool:
        if self.steps:
            return step % self.steps == 0
        return self.minutes > 0 and since_last_s >= self.minutes * 60


@dataclass(frozen=True)
class TrainOptions:
    """Everything about how to train (not what: the model config and the data source are separate)."""

    steps: int = 10_000
    batch_size: int = 8
    accum: int = 1
    lr: float = 4e-5  # Harmonai's value; right for fine-tunes (see models/default_recipe.py for scratch)
    lr_warmup: int = 0  # linear warm-up steps
    lr_drops: tuple[tuple[int, float], ...] = ()  # (step, lr) pairs: from that step on, train at that lr
    ema_decay: float = 0.995
    ema_warmup: int = 500  # steps with EMA decay 0.95 (upstream: the first 25 epochs)
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    seed: int = 0
    t_sampling: str = "sobol"
    gain_db: float = 0.0  # random gain of +-gain_db per item (0 = off, as upstream)
    label_dropout: float = 0.0  # share of items trained without their category (-1), for classifier-free guidance
    # guidance distillation (0 = off): the model learns the guided prediction of its starting weights at this
    # scale, uncond + w * (cond - uncond), so one call per step does what two did (unlabelled items learn the
    # unconditional prediction, so the result can still be guided further)
    distill_guidance: float = 0.0
    checkpoint_every: str = "1000"
    demo_every: str = "0"
    demo_steps: int = 50
    demo_count: int = 4
    export_every: str = "0"
    export_path: str = ""  # "" = no export
    half: bool = False
    max_minutes: float = 0.0  # 0 = no time budget
    device: str = "auto"
    precision: str = "fp32"
    threads: int = 0  # 0 = torch's default
    log_every: int = 10

    def __post_init__(self) -> None:
        positive_ints = ("steps", "batch_size", "accum", "demo_steps", "demo_count", "log_every")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr_warmup", "ema_warmup", "threads", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ConfigError(f"lr must be in (0, 1], got {self.lr}")
        drops = tuple((int(s), float(v)) for s, v in self.lr_drops) if all(
            isinstance(d, list | tuple) and len(d) == 2 for d in self.lr_drops) else None
        if drops is None or any(s < 0 or not (math.isfinite(v) and 0 < v <= 1) for s, v in drops) \
                or [s for s, _ in drops] != sorted({s for s, _ in drops}):
            raise ConfigError(f"lr_drops must be (step, lr) pairs with rising steps >= 0 and lr in (0, 1], "
                              f"got {self.lr_drops!r}")
        object.__setattr__(self, "lr_drops", drops)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if isinstance(self.label_dropout, bool) or not isinstance(self.label_dropout, (int, float)) or not (
                0.0 <= self.label_dropout < 1.0):  # fmt: skip
            raise ConfigError(f"label_dropout must be in [0, 1), got {self.label_dropout!r}")
        if isinstance(self.distill_guidance, bool) or not isinstance(self.distill_guidance, (int, float)) or not (
                self.distill_guidance == 0 or 1 < self.distill_guidance <= MAX_GUIDANCE):  # fmt: skip
            raise ConfigError(f"distill_guidance must be 0 (off) or a guidance scale in (1, {MAX_GUIDANCE:g}], "
                              f"got {self.distill_guidance!r}")
        if not 0 <= self.gain_db <= 24:
            raise ConfigError(f"gain_db must be in 0..24 dB, got {self.gain_db}")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0):
            raise ConfigError(f"max_minutes must be >= 0 (0 = no budget), got {self.max_minutes}")
        if self.t_sampling not in T_SAMPLING:
            raise ConfigError(f"t_sampling must be one of {list(T_SAMPLING)}, got '{self.t_sampling}'")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got '{self.precision}'")
        for name in ("checkpoint_every", "demo_every", "export_every"):
            Every.parse(getattr(self, name), name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TrainResult:
    step: int
    reason: str  # "done" | "time budget" | "interrupted" | "terminated" | "stopped"
    checkpoint: Path
    export: Path | None
    loss: float  # running mean at the end
    seconds: float


def pick_device(name: str) -> torch.device:
    from models.torch_backend import pick_device as pick

    return pick(name)


def add_categories(config: ModelConfig, state: dict[str, torch.Tensor], categories: tuple[str, ...],
                   seed: int = 0) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Give an unconditional model a fresh class embedding without changing what it does at first.

    The first convolution (and its 1x1 skip) get input slices for the class planes initialised to zero, so
    the model's output is unchanged until training moves them; the embedding itself is drawn N(0, 1).
    """
    if config.categories:
        raise ConfigError(f"model '{config.name}' already has categories {list(config.categories)}")
    if not categories:
        raise ConfigError("add_categories needs at least one category")
    new_config = replace(config, categories=tuple(categories))
    new_state = dict(state)
    audio_and_time = config.channels + TIME_FEATURES
    for key in ("net.0.main.0.weight", "net.0.skip.weight"):
        if key in state:
            w = state[key]
            if w.shape[1] != audio_and_time:
                raise CheckpointError(f"'{key}' takes {w.shape[1]} inputs, expected {audio_and_time}")
            extra = torch.zeros(w.shape[0], new_config.in_channels - audio_and_time, w.shape[2], dtype=w.dtype)
            new_state[key] = torch.cat([w, extra], dim=1)
    gen = torch.Generator().manual_seed(seed)
    width = new_config.in_channels - audio_and_time
    new_state["class_embed.weight"] = torch.randn(len(categories), width, generator=gen)
    return new_config, new_state


def add_level_cond(config: ModelConfig, state: dict[str, torch.Tensor],
                   seed: int = 0) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Give a trained model per-level conditioning (``config.level_cond``) without changing what it does.

    The new per-level maps start at zero (see :mod:`models.network`), so the upgraded model's output equals
    the original's until training moves them; the shared MLP in front of them gets its usual random init.
    """
    if config.level_cond:
        raise ConfigError(f"model '{config.name}' already has level conditioning")
    new_config = replace(config, level_cond=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = DiffusionAttnUnet1D(new_config).state_dict()
    new_state = dict(state)
    for key, value in fresh.items():
        if key.startswith(("cond_mlp.", "level_cond.")):
            new_state[key] = value
    return new_config, new_state


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class Trainer:
    """One training run in a folder; :meth:`run` trains until done, out of time, or asked to stop."""

    def __init__(self, config: ModelConfig, source: AudioSource, options: TrainOptions, run_dir: str | Path, *,
                 init_state: dict[str, torch.Tensor] | None = None, init_from: str = "",
                 unconditional: bool = False, fresh: bool = False, _resume: dict[str, Any] | None = None) -> None:
        self.config = config
        self.source = source
        self.options = options
        self.run_dir = Path(run_dir)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.init_from = init_from
        self.unconditional = bool(unconditional)
        if _resume is None and self.checkpoint_path.exists() and not fresh:
            raise DDError(f"run folder '{self.run_dir}' already holds a training run; resume it "
                          "(Trainer.resume / --resume) or start over (fresh=True / --fresh)")
        fit_to_model(source, config, unconditional=self.unconditional)
        self.device = pick_device(options.device)
        if options.precision != "fp32" and self.device.type != "cuda":
            raise ConfigError(f"precision '{options.precision}' is only supported on CUDA; "
                              f"device is '{self.device}': use fp32")
        if options.threads:
            torch.set_num_threads(options.threads)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global RNG
            torch.manual_seed(options.seed)
            model = DiffusionAttnUnet1D(config)
        if init_state is not None:
            load_strict(model, init_state, init_from or "initial weights")
        # channels-last 4-D tensors are oneDNN's fast path on the CPU, for training too (about 2x here)
        model.channels_last = self.device.type == "cpu"
        self.model = model.to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.teacher: DiffusionAttnUnet1D | None = None
        if options.distill_guidance:
            if not config.categories or self.unconditional:
                raise ConfigError(f"distill_guidance needs a model with categories, trained with label dropout; "
                                  f"'{config.name}' is unconditional here")
            if init_state is None and _resume is None:
                raise ConfigError("distill_guidance needs the model to distill: give its weights (--init)")
            # the frozen starting weights give the targets; the result recommends no further guidance
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.config = replace(config, guidance=1.0, guidance_interval=(0.0, 1.0))
        if _resume is None and not self.unconditional:
            # where each category's training sounds have almost nothing, and how soft their onsets are: the finish
            # stage filters the model's rumble and hiss there and fades its onsets in as much (models/finish.py);
            # categories the data lacks keep the model's
            m = measure_finish(source, self.config)
            self.config = replace(self.config, low_cut_hz=m.low_cut_hz, high_cut_hz=m.high_cut_hz,
                                  fade_in_ms=m.fade_in_ms)
            if any(m.low_cut_hz) or any(m.high_cut_hz):
                log.info("band limits per category (low cut / high cut, Hz; 0 = none): %s", ", ".join(
                    f"{c} {a:g}/{b:g}" for c, a, b in zip(self.config.categories, m.low_cut_hz, m.high_cut_hz,
                                                          strict=True)))
            if any(m.fade_in_ms):
                log.info("onset fades per category (ms; 0 = none): %s", ", ".join(
                    f"{c} {ms:g}" for c, ms in zip(self.config.categories, m.fade_in_ms, strict=True)))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=options.lr)
        self.scaler = torch.amp.GradScaler("cuda") if options.precision == "fp16" else None
        self.step = 0
        self.history: list[list[float]] = []  # [step, mean loss since the previous entry]
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run
        self._sobol: torch.quasirandom.SobolEngine | None = None
        self._sobol_pos = -1
        self._stop_reason = ""
        self._losses: deque[float] = deque(maxlen=100)
        if _resume is not None:
            self._load_state(_resume)
        elif self.checkpoint_path.exists():  # fresh: keep the old run's state until this one saves its own
            self.checkpoint_path.replace(self.checkpoint_path.with_suffix(".ckpt.old"))

    # --- resume ------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, run_dir: str | Path, *, source: AudioSource | None = None, data_path: str | Path | None = None,
               overrides: dict[str, Any] | None = None) -> Trainer:
        """Continue the run in ``run_dir`` from its last checkpoint; ``overrides`` may change options such as
        ``steps``, ``lr``, intervals, device or time budget, but not batch size, accumulation or seed."""
        path = Path(run_dir) / CHECKPOINT_NAME
        if not path.is_file():
            raise CheckpointError(f"no training checkpoint '{path}' to resume")
        state = safe_torch_load(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"'{path}' is not a dd-companion training checkpoint")
        if int(state.get("version", 0)) > CHECKPOINT_VERSION:
            raise CheckpointError(f"'{path}' was written by a newer version (format {state['version']})")
        config = ModelConfig.from_dict(state["config"])
        saved = TrainOptions.from_dict(state["options"])
        overrides = dict(overrides or {})
        changed = [f"{k} {getattr(saved, k)!r} -> {overrides[k]!r}" for k in RUN_IDENTITY
                   if k in overrides and overrides[k] != getattr(saved, k)]
        if changed:
            raise ConfigError(f"run '{run_dir}' cannot change {', '.join(changed)} on resume; start a new run "
                              "(--fresh or another --run-dir) instead")
        options = replace(saved, **overrides)
        data = state["data"]
        if source is None:
            source = open_source(data["kind"], path=data_path or data.get("path"), sample_rate=data["sample_rate"],
                                 sample_size=data["sample_size"], channels=data["channels"],
                                 random_crop=bool(data.get("random_crop", False)),
                                 unconditional=bool(data.get("unconditional", False)), seed=data["seed"])
        mismatch = [k for k in ("kind", "sample_rate", "sample_size", "seed", "categories")
                    if source.spec().get(k) != data.get(k)]
        if mismatch:
            raise DatasetError(f"data for resuming '{run_dir}' differs from the run's in {mismatch}: run "
                               f"{ {k: data.get(k) for k in mismatch} }, given { {k: source.spec()[k] for k in mismatch} }")
        return cls(config, source, options, run_dir, init_from=str(state.get("init", "")),
                   unconditional=bool(state.get("unconditional", False)), _resume=state)

    def _load_state(self, state: dict[str, Any]) -> None:
        where = str(self.checkpoint_path)
        load_strict(self.model, state["model"], where)
        load_strict(self.ema, state["ema"], where)
        if self.teacher is not None:
            if "teacher" not in state:
                raise CheckpointError(f"'{where}' holds no teacher weights for guidance distillation")
            load_strict(self.teacher, state["teacher"], where)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"optimizer state in '{where}' does not fit the model: {exc}") from None
        for group in self.optimizer.param_groups:  # a changed lr takes effect on resume
            group["lr"] = self.options.lr
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = [list(map(float, h)) for h in state.get("history", [])]
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    # --- one step ----------------------------------------------------------------------------------
    def _u(self, micro: int, n: int) -> np.ndarray:
        """Uniform u in [0, 1) for micro-batch ``micro``: scrambled Sobol (upstream) or stratified."""
        if self.options.t_sampling == "stratified":
            rng = np.random.default_rng([self.options.seed, micro, 3])
            return (np.arange(n) + rng.random(n)) / n
        if self._sobol is None or self._sobol_pos != micro * n:
            self._sobol = torch.quasirandom.SobolEngine(1, scramble=True, seed=self.options.seed)
            if micro:
                self._sobol.fast_forward(micro * n)
        self._sobol_pos = (micro + 1) * n
        return self._sobol.draw(n, dtype=torch.float64)[:, 0].numpy()

    def _lr(self, step: int) -> float:
        if self.options.lr_warmup and step < self.options.lr_warmup:
            return self.options.lr * (step + 1) / self.options.lr_warmup
        lr = self.options.lr
        for start, dropped in self.options.lr_drops:
            if step >= start:
                lr = dropped
        return lr

    def loss_on(self, micro: int) -> torch.Tensor:
        """The v-objective on micro-batch ``micro`` (items ``micro * batch_size`` onward)."""
        opts = self.options
        x0_np, labels_np = make_batch(self.source, micro * opts.batch_size, opts.batch_size, gain_db=opts.gain_db)
        t = crash_t(self._u(micro, opts.batch_size))
        alpha = torch.from_numpy(np.cos(t * math.pi / 2)).float()[:, None, None]
        sigma = torch.from_numpy(np.sin(t * math.pi / 2)).float()[:, None, None]
        gen = torch.Generator().manual_seed(_seed_for(opts.seed, micro, 4))
        x0 = torch.from_numpy(x0_np)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = (x0 * alpha + noise * sigma).to(self.device)
        v = (noise * alpha - x0 * sigma).to(self.device)
        t_dev = torch.from_numpy(t).float().to(self.device)
        if labels_np is not None and opts.label_dropout:
            dropped = np.random.default_rng([opts.seed, micro, 5]).random(len(labels_np)) < opts.label_dropout
            labels_np = np.where(dropped, -1, labels_np)
        labels = None if labels_np is None else torch.from_numpy(labels_np).to(self.device)
        if self.teacher is not None and labels is not None:
            v = self._guided_target(x_t, t_dev, labels)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = self.model(x_t, t_dev, labels)
        return F.mse_loss(pred.float(), v)

    @torch.no_grad()
    def _guided_target(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The teacher's prediction guided at ``distill_guidance`` (labelled items) or unconditional (-1)."""
        both = self.teacher(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, -1)]))
        cond, uncond = both.float().chunk(2)
        guided = uncond + self.options.distill_guidance * (cond - uncond)
        return torch.where((labels >= 0)[:, None, None], guided, uncond)

    def train_step(self) -> float:
        """One optimizer step (``accum`` micro-batches); returns the mean loss."""
        opts = self.options
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        total = 0.0
        for a in range(opts.accum):
            loss = self.loss_on(self.step * opts.accum + a)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {self.step}; lower the lr (now {opts.lr}) "
                              "or set grad_clip")
            scaled = loss / opts.accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.item() / opts.accum
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if opts.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        return total

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = 0.95 if self.step < self.options.ema_warmup else self.options.ema_decay
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, list(self.model.parameters()), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            e.copy_(b)

    # --- saving ------------------------------------------------------------------------------------
    def state_dict(self, elapsed_s: float) -> dict[str, Any]:
        """The training state as plain containers (loadable with ``weights_only=True``)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "config": self.config.to_dict(),
            "options": self.options.to_dict(),
            "data": self.source.spec(),
            # every random draw derives from (seed, micro-batch index); the position is the step
            "rng": {"scheme": "seed+micro-batch", "seed": self.options.seed,
                    "micro_batches": self.step * self.options.accum,
                    "items": self.step * self.options.accum * self.options.batch_size},
            "history": self.history,
            "init": self.init_from,
            **({"teacher": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}}
               if self.teacher is not None else {}),
            "unconditional": self.unconditional,
            "elapsed_s": float(elapsed_s),
        }

    def save_checkpoint(self, elapsed_s: float = 0.0) -> Path:
        """Write ``last.ckpt`` atomically (temporary file, fsync, rename)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".{CHECKPOINT_NAME}.partial")
        with open(tmp, "wb") as handle:
            torch.save(self.state_dict(elapsed_s), handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.checkpoint_path)
        return self.checkpoint_path

    def export(self, path: str | Path | None = None) -> Path:
        """Write the EMA weights in the project's format (fp16 with ``options.half``)."""
        target = Path(path or self.options.export_path)
        if not str(target):
            raise ConfigError("no export path given")
        ema = copy.deepcopy(self.ema).cpu()
        ema.config = self.config  # the same network; its recommendations may have been updated since the start
        extra = {"train_step": str(self.step), "train_seed": str(self.options.seed),
                 "train_data": self.source.describe(), "train_init": self.init_from,
                 "train_options": json.dumps({k: v for k, v in self.options.to_dict().items()
                                              if k not in ("device", "threads", "export_path")}, sort_keys=True)}
        path = save_model(ema, target, half=self.options.half, extra=extra)
        umask = os.umask(0)
        os.umask(umask)
        path.chmod(0o666 & ~umask)  # a shipped or shared model must be readable (the temp file was 0600)
        return path

    def demo(self) -> Path:
        """A few sounds from the EMA model, as WAVs in ``<run_dir>/demos/step_<n>/``."""
        from models.generate import SamplingOptions, generate
        from models.torch_backend import TorchBackend

        folder = self.run_dir / "demos" / f"step_{self.step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        backend = TorchBackend(copy.deepcopy(self.ema), None, self.device, torch.float32, "training", "")
        n = self.options.demo_count
        cats = self.config.categories
        names: list[str | None]
        if cats:
            picks = sorted(set(np.linspace(0, len(cats) - 1, min(n, len(cats))).round().astype(int).tolist()))
            names = [cats[i] for i in picks]
        else:
            names = [None] * n
        audio = generate(backend, list(range(len(names))), category=names,
                         options=SamplingOptions(steps=self.options.demo_steps))
        for i, (name, item) in enumerate(zip(names, audio, strict=True)):
            sf.write(folder / f"{name or 'sample'}_{i}.wav", item.T, self.config.sample_rate, subtype="FLOAT")
        return folder

    # --- the loop ----------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the loop to stop after the current step (checkpoint and export first). Thread-safe."""
        self._stop_reason = self._stop_reason or reason

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop_reason:  # a second Ctrl-C: give up on the clean stop
            raise KeyboardInterrupt
        self.request_stop("interrupted" if signum == signal.SIGINT else "terminated")
        log.warning("stopping after this step (checkpoint first); press Ctrl-C again to abort")

    def run(self, on_step: Callable[[Trainer, float], None] | None = None) -> TrainResult:
        """Train until ``options.steps``, the time budget, or a stop request; then checkpoint and export."""
        opts = self.options
        every = {k: Every.parse(getattr(opts, f"{k}_every"), f"{k}_every") for k in ("checkpoint", "demo", "export")}
        handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        start = time.monotonic()
        last = dict.fromkeys(every, start)
        interval: list[float] = []
        csv_path = self.run_dir / "log.csv"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        new_csv = not csv_path.exists()
        tty = sys.stderr.isatty()
        bar = tqdm(total=opts.steps, initial=self.step, unit="step", dynamic_ncols=True, disable=not tty)
        samples_per_step = opts.batch_size * opts.accum
        log.info("training %s from step %d to %d on %s (%s), batch %d x %d, lr %g", self.config.name, self.step,
                 opts.steps, self.device, self.source.describe(), opts.batch_size, opts.accum, opts.lr)
        reason = "done"
        first_step, t_first = self.step, start
        try:
            with open(csv_path, "a", newline="") as csv_file:
                writer = csv.writer(csv_file)
                if new_csv:
                    writer.writerow(["step", "loss", "lr", "steps_per_s", "samples_per_s", "elapsed_s"])
                while self.step < opts.steps:
                    if self._stop_reason:
                        reason = self._stop_reason
                        break
                    if opts.max_minutes and time.monotonic() - start >= opts.max_minutes * 60:
                        reason = "time budget"
                        break
                    loss = self.train_step()
                    self._losses.append(loss)
                    interval.append(loss)
                    now = time.monotonic()
                    rate = (self.step - first_step) / max(now - t_first, 1e-9)
                    bar.update(1)
                    bar.set_postfix({"loss": f"{self.running_loss:.4f}", "steps/s": f"{rate:.2f}",
                                    "samples/s": f"{rate * samples_per_step:.1f}"})
                    if self.step % opts.log_every == 0:
                        mean = float(np.mean(interval))
                        self.history.append([float(self.step), mean])
                        writer.writerow([self.step, f"{mean:.6f}", f"{self._lr(self.step - 1):.3g}",
                                         f"{rate:.4f}", f"{rate * samples_per_step:.2f}",
                                         f"{self.elapsed_before + now - start:.1f}"])
                        csv_file.flush()
                        interval = []
                        if not tty:
                            log.info("step %d loss %.4f (mean of last %d %.4f) %.3f steps/s %.1f samples/s",
                                     self.step, mean, len(self._losses), self.running_loss, rate,
                                     rate * samples_per_step)
                    if on_step is not None:
                        on_step(self, loss)
                    for key in ("checkpoint", "export", "demo"):
                        if every[key].enabled and every[key].due(self.step, now - last[key]):
                            if key == "checkpoint":
                                self.save_checkpoint(self.elapsed_before + now - start)
                            elif key == "export" and opts.export_path:
                                log.info("exported %s", self.export())
                            elif key == "demo":
                                log.info("demos in %s", self.demo())
                            last[key] = time.monotonic()
        finally:
            bar.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        elapsed = time.monotonic() - start
        checkpoint = self.save_checkpoint(self.elapsed_before + elapsed)
        exported = self.export() if opts.export_path else None
        log.info("%s at step %d after %.1f min; checkpoint %s%s", reason, self.step, elapsed / 60, checkpoint,
                 f", model {exported}" if exported else "")
        return TrainResult(self.step, reason, checkpoint, exported, self.running_loss, elapsed)

    @property
    def running_loss(self) -> float:
        return float(np.mean(self._losses)) if self._losses else float("nan")

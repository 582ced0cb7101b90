"""What can be asked of the engine: the requests, the plans they become, and the errors that refuse them.

Every request is a frozen dataclass. :func:`companion.engine.validate.prepare` checks one against the loaded
model (:class:`ModelFacts`) and the live parameters in the caller's thread and returns a :class:`Plan`
with every default filled in, or raises one of the errors below, whose ``code`` is the error code the
OSC protocol sends. So a bad request never reaches the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from models.backend import Backend
from models.errors import DDError
from models.finish import band_of
from models.generate import SamplingOptions

MAX_COUNT = 64
MAX_FRAMES = 64


class RequestRejected(DDError):
    """A request the engine refuses before queueing it."""

    code = "bad_config"


class NotFoundError(RequestRejected):
    """A category, file, earlier result, model or job that does not exist."""

    code = "not_found"


class OutOfRangeError(RequestRejected, ValueError):
    """A number (count, steps, strength, frames, seconds) outside what is allowed."""

    code = "out_of_range"


class BusyError(RequestRejected):
    """The queue of live jobs is full (or a model is already loading): try again later."""

    code = "busy"


class UnknownJobError(RequestRejected):
    """A cancel named a job that is neither queued nor running."""

    code = "unknown_job"


class Priority(IntEnum):
    """Lower runs first: a live request before a background refill of the pool."""

    LIVE = 0
    BACKGROUND = 10


@dataclass(frozen=True)
class GenerateRequest:
    """New sounds of ``category``. ``seed`` None uses the ``seed`` parameter (random when -1); item k
    gets seed+k. ``sampler``/``steps``/``guidance``/``seconds`` None use the parameters (and those left
    unset, the model's recommendation). ``fresh`` skips the pool."""

    category: str | None = None
    count: int = 1
    seed: int | None = None
    sampler: str | None = None
    steps: int | None = None
    seconds: float | None = None
    guidance: float | None = None
    fresh: bool = False
    origin: str = "api"


@dataclass(frozen=True)
class VariationRequest:
    """Variations of ``source``: an audio file, or ``"job:<id>"`` / ``"job:<id>:<item>"`` for an earlier
    result. ``category`` None uses the one recorded in the source file, if the model has it. ``guidance``
    None uses the parameter, as for :class:`GenerateRequest`."""

    source: str | Path
    strength: float | None = None
    count: int = 1
    seed: int | None = None
    category: str | None = None
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    origin: str = "api"


@dataclass(frozen=True)
class MorphRequest:
    """``frames`` sounds going from ``source_a`` to ``source_b`` (files or earlier results); always unguided,
    since the inversion that finds the sources' latents must be exact."""

    source_a: str | Path
    source_b: str | Path
    frames: int = 8
    category: str | None = None
    steps: int | None = None
    origin: str = "api"


@dataclass(frozen=True)
class RefillRequest:
    """Render ``count`` samples of ``category`` for the pre-render pool (kept in memory, not written)."""

    category: str | None
    count: int = 1
    origin: str = "pool"


@dataclass(frozen=True)
class LoadModelRequest:
    """Switch to another model; the current one keeps serving until the new one is ready."""

    model: str | Path | None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    origin: str = "api"


Request = GenerateRequest | VariationRequest | MorphRequest | RefillRequest | LoadModelRequest


@dataclass(frozen=True)
class ModelFacts:
    """What validation needs to know about the loaded model (immutable; replaced on a switch)."""

    name: str
    categories: tuple[str, ...]
    sample_rate: int
    sample_size: int
    channels: int
    model_hash: str
    runtime: str  # e.g. torch-cpu, torch-cuda, onnxruntime-cpu
    gpu: bool
    length_for_seconds: Callable[[float], int] = field(repr=False, compare=False)
    sampler: str | None = None  # the model's recommended sampler and steps (None: the companion's defaults)
    steps: int | None = None
    guidance: float = 1.0  # the model's recommended classifier-free guidance scale (1 = none)
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # and the times t' where it applies
    sigma_max: float | None = None  # the karras schedule's highest noise level (None: the companion's default)
    rho: float | None = None  # and its spacing
    tail_gate_db: float = 0.0  # the model's recommended tail gate (0: none)
    low_cut_hz: tuple[float, ...] = ()  # its band limits per category (empty: none)
    high_cut_hz: tuple[float, ...] = ()

    @classmethod
    def of(cls, backend: Backend) -> ModelFacts:
        config = backend.config
        device = str(backend.device).split(":")[0]
        return cls(config.name, tuple(config.categories), config.sample_rate, config.sample_size,
                   config.channels, backend.model_hash, f"{backend.kind}-{device}", device in ("cuda", "mps"),
                   config.length_for_seconds, config.sampler, config.steps, config.guidance,
                   config.guidance_interval, config.sigma_max, config.rho, config.tail_gate_db, config.low_cut_hz,
                   config.high_cut_hz)

    @property
    def seconds(self) -> float:
        return self.sample_size / self.sample_rate

    def band_for(self, category: str | None) -> tuple[float, float]:
        """The model's band limits for ``category``: (low cut, high cut) in Hz (0: none)."""
        return band_of(self.categories, self.low_cut_hz, self.high_cut_hz, category)


@dataclass(frozen=True)
class Plan:
    """A checked request with every default resolved; what the worker executes."""

    kind: str  # generate | variation | morph | refill | load
    priority: Priority
    category: str | None = None
    seeds: tuple[int, ...] = ()
    options: SamplingOptions | None = None
    length: int | None = None
    sources: tuple[Path, ...] = ()
    strength: float | None = None
    frames: int = 0
    random_seeds: bool = False
    fresh: bool = False
    model: str | None = None
    load_options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return self.frames if self.kind == "morph" else len(self.seeds)

    @property
    def sampling_key(self) -> tuple | None:
        """Requests with equal keys may share a batch, and a pooled sample answers any of them."""
        if self.kind not in ("generate", "refill") or self.options is None:
            return None
        o = self.options
        return (self.category, o.sampler, o.steps, o.schedule, o.eta, o.guidance, o.guidance_interval, o.sigma_max,
                o.rho, o.tail_gate_db, o.band_limit, self.length)

    @property
    def pool_ok(self) -> bool:
        return self.kind == "generate" and self.random_seeds and not self.fresh

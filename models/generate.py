"""Generation, variation and morphing over any backend: seeds in, audio at the model rate out.

Randomness is per item: each seed becomes the item's own generator, which draws the item's starting
noise and then any noise its sampler needs, so a seed gives the same sound whatever the batch.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from models.backend import Backend, Denoiser
from models.config import ModelConfig, check_guidance, check_interval
from models.errors import ConfigError, LengthError
from models.finish import check_tail_gate, finish
from models.samplers import DEFAULT_SAMPLER, get_sampler, invert, noise_to, sample, slerp
from models.schedules import KARRAS_RHO, KARRAS_SIGMA_MAX, check_rho, check_sigma_max, make_schedule

MAX_SEED = 2**31 - 1  # fits an OSC int32
Progress = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return int(seed)


class Recommendation(Protocol):
    """What a model recommends (a :class:`~models.config.ModelConfig`, or the companion's model facts)."""

    sampler: str | None
    steps: int | None
    guidance: float
    guidance_interval: tuple[float, float]
    categories: tuple[str, ...]
    sigma_max: float | None
    rho: float | None
    tail_gate_db: float


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: sampler name (None = the model's recommended one, else :data:`DEFAULT_SAMPLER`),
    steps (None = the model's recommendation for that sampler, else the sampler's default), schedule
    (None = the sampler's default), eta, the classifier-free guidance scale and the times t' where it
    applies (None = the model's recommendation; 1 = none), the karras schedule's highest noise level and
    spacing (None = the model's recommendation, else :data:`~models.schedules.KARRAS_SIGMA_MAX` and
    :data:`~models.schedules.KARRAS_RHO`), and the finish stage's tail gate (None = the model's
    recommendation; 0 = off; see :func:`models.finish.gate_tail`) and whether the finish stage applies the
    model's per-category band limits (None = yes, where the model has them; see ``ModelConfig.low_cut_hz`` and
    ``high_cut_hz``)."""

    sampler: str | None = None
    steps: int | None = None
    schedule: str | None = None
    eta: float | None = None
    guidance: float | None = None
    guidance_interval: tuple[float, float] | None = None
    sigma_max: float | None = None
    rho: float | None = None
    tail_gate_db: float | None = None
    band_limit: bool | None = None

    def resolved(self, config: Recommendation | None = None) -> SamplingOptions:
        """Fill the defaults (``config``'s recommendations first) and check every field."""
        sampler = self.sampler or (config.sampler if config is not None else None) or DEFAULT_SAMPLER
        info = get_sampler(sampler)
        steps = self.steps
        if steps is None and config is not None and config.steps is not None and sampler == (config.sampler or
                                                                                               DEFAULT_SAMPLER):
            steps = config.steps
        steps = info.default_steps if steps is None else steps
        if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 1000:
            raise ConfigError(f"steps must be an integer in 1..1000, got {steps!r}")
        schedule = self.schedule or info.default_schedule
        make_schedule(schedule, 1)  # validates the name
        if self.eta is not None and "eta" not in info.options:
            raise ConfigError(f"sampler '{sampler}' takes no eta; samplers with eta: "
                              f"{[n for n in ('v-ddim', 'dpmpp-2m-sde')]}")
        guidance = self.guidance
        if guidance is None:
            guidance = getattr(config, "guidance", 1.0) if config is not None else 1.0
        guidance = check_guidance(guidance, config is None or bool(config.categories))
        interval = self.guidance_interval
        if interval is None:
            interval = getattr(config, "guidance_interval", (0.0, 1.0)) if config is not None else (0.0, 1.0)
        sigma_max = _chosen(self.sigma_max, getattr(config, "sigma_max", None), KARRAS_SIGMA_MAX, check_sigma_max)
        rho = _chosen(self.rho, getattr(config, "rho", None), KARRAS_RHO, check_rho)
        gate = _chosen(self.tail_gate_db, getattr(config, "tail_gate_db", None), 0.0, check_tail_gate)
        if self.band_limit is not None and not isinstance(self.band_limit, (bool, np.bool_)):
            raise ConfigError(f"band_limit must be true (the model's band limits) or false (none), got "
                              f"{self.band_limit!r}")
        return replace(self, sampler=sampler, steps=int(steps), schedule=schedule, guidance=guidance,
                       guidance_interval=check_interval(interval), sigma_max=sigma_max, rho=rho, tail_gate_db=gate,
                       band_limit=self.band_limit is None or bool(self.band_limit))

    def sampler_kwargs(self) -> dict[str, float]:
        return {} if self.eta is None else {"eta": float(self.eta)}


def _chosen(own: float | None, recommended: float | None, default: float, check: Callable[[object], float]) -> float:
    """The caller's value, else the model's recommendation, else the companion's default; checked."""
    value = own if own is not None else recommended
    return default if value is None else check(value)


def _labels(backend: Backend, category: str | None | Sequence[str | None], n: int) -> np.ndarray | None:
    config = backend.config
    cats = list(category) if isinstance(category, (list, tuple)) else [category] * n
    if len(cats) != n:
        raise ConfigError(f"got {len(cats)} categories for {n} items")
    if not config.categories:
        if any(c not in (None, "", "sample") for c in cats):
            raise ConfigError(f"model '{config.name}' is unconditional; it takes no category (got {cats[0]!r})")
        return None
    if any(c in (None, "") for c in cats):
        raise ConfigError(f"model '{config.name}' needs a category: one of {list(config.categories)}")
    return np.array([config.category_index(str(c)) for c in cats], dtype=np.int64)


def guided(backend: Backend, labels: np.ndarray | None, scale: float,
           interval: tuple[float, float] = (0.0, 1.0)) -> Denoiser:
    """The backend's denoiser for ``labels``, with classifier-free guidance when ``scale`` > 1.

    A guided call runs the conditional and the unconditional (category -1) prediction in one batch and
    returns ``v_uncond + scale * (v_cond - v_uncond)``: the sound pushed further towards its category. It
    applies where the diffusion time is within ``interval`` (inclusive); elsewhere a call is the plain
    conditional one, at half the cost. Without categories, or at scale 1, it is the plain denoiser.
    """
    plain = backend.denoiser(labels)
    if labels is None or scale == 1.0:
        return plain
    labels = np.asarray(labels, dtype=np.int64)
    both = backend.denoiser(np.concatenate([labels, np.full_like(labels, -1)]))
    low, high = interval

    def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        if not low <= float(t[0]) <= high:  # samplers give every item the same time
            return plain(x, t)
        n = x.shape[0]
        v = np.asarray(both(np.concatenate([x, x]), np.concatenate([t, t])))
        cond, uncond = v[:n], v[n:]
        return uncond + np.float32(scale) * (cond - uncond)

    return denoise


class _HasBands(Protocol):
    def band_for(self, category: str | None) -> tuple[float, float]: ...


def applied_band(model: _HasBands, category: str | None, band_limit: bool | None) -> tuple[float, float]:
    """The (low cut, high cut) the finish stage gives ``category``'s sounds: the model's (a ModelConfig or the
    companion's model facts) unless ``band_limit`` is False; (0, 0) = none. What recipes record."""
    return model.band_for(category) if band_limit is not False else (0.0, 0.0)


def _finish(out: np.ndarray, config: ModelConfig, category: str | None | Sequence[str | None], tail_gate_db: float,
            band_limit: bool) -> np.ndarray:
    """The finish stage for a batch, each item with its category's band limits (when ``band_limit``) and onset
    fade."""
    cats = list(category) if isinstance(category, (list, tuple)) else [category] * len(out)
    shapes = [(*applied_band(config, c, band_limit), config.fade_in_for(c)) for c in cats]
    if len(set(shapes)) == 1:
        return finish(out, config.sample_rate, config.fade_out_ms, tail_gate_db, *shapes[0])
    return np.stack([finish(item, config.sample_rate, config.fade_out_ms, tail_gate_db, *shape)
                     for item, shape in zip(out, shapes, strict=True)])


def _rngs(seeds: Sequence[int]) -> list[np.random.Generator]:
    return [np.random.default_rng(check_seed(s)) for s in seeds]


def generate(
    backend: Backend,
    seeds: Sequence[int],
    *,
    category: str | None | Sequence[str | None] = None,
    length: int | None = None,
    options: SamplingOptions = SamplingOptions(),
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """New sounds, one per seed: float32 ``[len(seeds), channels, length]`` at the model rate."""
    config = backend.config
    if not seeds:
        raise ConfigError("need at least one seed")
    length = config.sample_size if length is None else int(length)
    padded = config.padded_length(length)
    opts = options.resolved(backend.config)
    rngs = _rngs(seeds)
    labels = _labels(backend, category, len(seeds))
    noise = np.stack([g.standard_normal((config.channels, padded), dtype=np.float32) for g in rngs])
    ts = make_schedule(opts.schedule, opts.steps, sigma_max=opts.sigma_max, rho=opts.rho)
    denoise = guided(backend, labels, opts.guidance, opts.guidance_interval)
    out = sample(opts.sampler, denoise, noise, ts, rngs, callback=progress, cancel=cancel, **opts.sampler_kwargs())
    return _finish(out[..., :length], config, category, opts.tail_gate_db, bool(opts.band_limit))


def variation(
    backend: Backend,
    source: np.ndarray,
    seeds: Sequence[int],
    *,
    strength: float = 0.5,
    category: str | None | Sequence[str | None] = None,
    options: SamplingOptions = SamplingOptions(),
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """Variations of ``source`` (``[channels, n]`` at the model rate), one per seed.

    ``strength`` in (0, 1] is the diffusion time t' the source is noised to before sampling back, the
    same for every sampler: 1 keeps nothing of the source, 0.3 keeps its overall shape and timbre.
    The sampler spends ``ceil(steps * strength)`` steps on the way back.
    """
    config = backend.config
    if not (isinstance(strength, (int, float)) and 0.0 < float(strength) <= 1.0):
        raise ConfigError(f"strength must be in (0, 1], got {strength!r}")
    source = np.asarray(source, dtype=np.float32)
    if source.ndim != 2 or source.shape[0] != config.channels:
        raise ConfigError(f"source must be [{config.channels}, samples], got shape {source.shape}")
    length = source.shape[1]
    if length < config.min_length // 8:
        raise LengthError(f"source is {length} samples; at least {config.min_length // 8} needed")
    padded = config.padded_length(length)
    x0 = np.zeros((len(seeds), config.channels, padded), dtype=np.float32)
    x0[:, :, :length] = source
    opts = options.resolved(backend.config)
    steps = max(1, math.ceil(opts.steps * float(strength)))
    rngs = _rngs(seeds)
    labels = _labels(backend, category, len(seeds))
    noise = np.stack([g.standard_normal((config.channels, padded), dtype=np.float32) for g in rngs])
    ts = make_schedule(opts.schedule, steps, t_start=float(strength), sigma_max=opts.sigma_max, rho=opts.rho)
    x = noise_to(x0, ts[0], noise)
    denoise = guided(backend, labels, opts.guidance, opts.guidance_interval)
    out = sample(opts.sampler, denoise, x, ts, rngs, callback=progress, cancel=cancel, **opts.sampler_kwargs())
    return _finish(out[..., :length], config, category, opts.tail_gate_db, bool(opts.band_limit))


def morph(
    backend: Backend,
    a: np.ndarray,
    b: np.ndarray,
    frames: int,
    *,
    category: str | None = None,
    steps: int = 50,
    band_limit: bool = True,
    tail_gate_db: float | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """``frames`` sounds going from ``a`` to ``b`` (both ``[channels, n]``): float32 ``[frames, channels, n]``.

    Both sources are inverted deterministically to pure-noise latents, interpolated spherically with
    weights k/(frames-1) (the first and last frames reconstruct the sources), and sampled back with the
    deterministic DDIM sampler on the crash schedule. The finish stage applies the tail gate ``tail_gate_db``
    (None = the model's) and, when ``band_limit``, the category's band limits.
    """
    config = backend.config
    if not isinstance(frames, (int, np.integer)) or not 2 <= frames <= 64:
        raise ConfigError(f"frames must be an integer in 2..64, got {frames!r}")
    if not isinstance(steps, (int, np.integer)) or not 2 <= steps <= 1000:
        raise ConfigError(f"steps must be an integer in 2..1000, got {steps!r}")
    srcs = [np.asarray(s, dtype=np.float32) for s in (a, b)]
    for name, s in zip("ab", srcs, strict=True):
        if s.ndim != 2 or s.shape[0] != config.channels:
            raise ConfigError(f"source {name} must be [{config.channels}, samples], got shape {s.shape}")
    length = max(s.shape[1] for s in srcs)
    padded = config.padded_length(length)
    pair = np.zeros((2, config.channels, padded), dtype=np.float32)
    for i, s in enumerate(srcs):
        pair[i, :, : s.shape[1]] = s
    labels = _labels(backend, category, 2)
    ts = make_schedule("crash", steps)
    total = 2 * steps  # inversion (both sources in one batch), then sampling (all frames in one batch)

    def stage(offset: int) -> Progress | None:
        return None if progress is None else (lambda i, n: progress(offset + i, total))

    latents = invert(backend.denoiser(labels), pair, ts[::-1].copy(), callback=stage(0), cancel=cancel)
    weights = np.linspace(0.0, 1.0, frames)
    mixed = slerp(latents[:1], latents[1:], weights)
    frame_labels = None if labels is None else np.full(frames, labels[0])
    rngs = [np.random.default_rng(0) for _ in range(frames)]  # DDIM with eta 0 draws nothing
    out = sample("v-ddim", backend.denoiser(frame_labels), mixed, ts, rngs, callback=stage(steps), cancel=cancel)
    gate = config.tail_gate_db if tail_gate_db is None else check_tail_gate(tail_gate_db)
    return _finish(out[..., :length], config, category, gate, bool(band_limit))

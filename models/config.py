"""The frozen model configuration that travels inside every checkpoint the project writes."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models.errors import ConfigError, LengthError
from models.finish import band_of, check_fade_in, check_high_cut, check_low_cut, check_tail_gate, per_category
from models.schedules import check_rho, check_sigma_max

HARMONAI_C_MULTS: tuple[int, ...] = (128, 128, 256, 256) + (512,) * 10
TIME_FEATURES = 16  # the Fourier time features concatenated to the input (8 frequencies, cos and sin)
CLASS_FEATURES = 16  # width of the learned per-category embedding, when the model has categories
COND_FEATURES = 128  # width of the shared time + category embedding of level-conditioned models
MAX_GUIDANCE = 20.0  # largest classifier-free guidance scale accepted
PATCHES = (1, 2, 4, 8, 16)  # allowed patch sizes (the project's own models; Harmonai's are all 1)


def check_guidance(value: Any, has_categories: bool) -> float:
    """A classifier-free guidance scale in 1..MAX_GUIDANCE (1 = none); above 1 only for models with categories."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 1.0 <= value <= MAX_GUIDANCE:
        raise ConfigError(f"guidance must be a number in 1..{MAX_GUIDANCE:g} (1 = none), got {value!r}")
    if value != 1.0 and not has_categories:
        raise ConfigError(f"guidance {value:g} needs a model with categories; this one is unconditional (use 1)")
    return float(value)


def check_interval(value: Any) -> tuple[float, float]:
    """A guidance interval as a (low, high) pair of diffusion times with 0 <= low < high <= 1."""
    try:
        low, high = (float(v) for v in value)
        ok = 0.0 <= low < high <= 1.0 and not any(isinstance(v, bool) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"guidance_interval must be two times low < high in 0..1, got {value!r}")
    return low, high


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and audio format of one Dance Diffusion network.

    ``n_attn_layers`` keeps the original meaning (attention on levels ``i >= depth - n_attn_layers - 1``),
    so the Harmonai value of 4 gives attention on the six innermost levels.
    """

    name: str = "untitled"
    sample_rate: int = 48000
    sample_size: int = 65536
    channels: int = 2
    depth: int = 14
    c_mults: tuple[int, ...] = HARMONAI_C_MULTS
    n_attn_layers: int = 4
    patch: int = 1  # samples folded into channels before the first level (1 = the original network)
    # the diffusion time and the category also enter every level through a small embedding (the project's own
    # models; Harmonai's networks see them at the input only)
    level_cond: bool = False
    categories: tuple[str, ...] = ()
    # how this model samples best when the user chooses nothing (None: the companion's defaults)
    sampler: str | None = None
    steps: int | None = None
    # classifier-free guidance scale this model recommends (1 = none); > 1 needs a model trained with label
    # dropout, which learned the unconditional sound of its data as well (category -1)
    guidance: float = 1.0
    # the diffusion times t' (0..1) where guidance applies; outside, one plain conditional call per step
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    # the highest noise level sigma_k of the karras schedule for this model (None: the companion's default,
    # models/schedules.py KARRAS_SIGMA_MAX)
    sigma_max: float | None = None
    # and its spacing rho (None: models/schedules.py KARRAS_RHO, 7)
    rho: float | None = None
    # the end fade of the one-shots the model learned from; generated sounds end with the same fade (0: none,
    # e.g. loop models, whose sounds go on past the window)
    fade_out_ms: float = 0.0
    # the tail gate this model recommends (models/finish.py): dB under a sound's loudest 10 ms below which its
    # output is pushed down (0: none). For models that leave a floor of hiss or rumble where their training
    # sounds were silent
    tail_gate_db: float = 0.0
    # per category (same order; empty: none), the high-pass corner in Hz the finish stage applies to that
    # category's sounds (0: none beyond the DC filter): where its training sounds have almost no energy
    # (models/finish.py low_cut_of), measured by the trainer on the data it trains on
    low_cut_hz: tuple[float, ...] = ()
    # and likewise the low-pass corner (0: none): where they have almost no energy above it (finish.high_cut_of)
    high_cut_hz: tuple[float, ...] = ()
    # per category (same order; empty: none), the onset fade in ms the finish stage gives that category's sounds (0:
    # none): as long as its training sounds take at the least to reach half their peak (finish.fade_in_of),
    # measured by the trainer likewise
    fade_in_ms: tuple[float, ...] = ()
    license: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_mults", tuple(int(c) for c in self.c_mults))
        object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
        if not 2 <= self.depth <= 16:
            raise ConfigError(f"depth must be in 2..16, got {self.depth}")
        if len(self.c_mults) != self.depth:
            raise ConfigError(f"c_mults must have depth={self.depth} entries, got {len(self.c_mults)}")
        for level, c in enumerate(self.c_mults, start=1):
            if c <= 0:
                raise ConfigError(f"c_mults[{level - 1}] must be positive, got {c}")
            attn_level = level >= self.first_attn_level or level + 1 == self.first_attn_level
            if attn_level and c % 32:
                raise ConfigError(
                    f"c_mults[{level - 1}]={c} feeds an attention level and must be a multiple of 32 (head size)"
                )
        if self.channels not in (1, 2):
            raise ConfigError(f"channels must be 1 (mono) or 2 (stereo), got {self.channels}")
        if not 8000 <= self.sample_rate <= 192000:
            raise ConfigError(f"sample_rate must be in 8000..192000 Hz, got {self.sample_rate}")
        if self.patch not in PATCHES:
            raise ConfigError(f"patch must be one of {', '.join(map(str, PATCHES))}, got {self.patch}")
        if self.n_attn_layers < 0:
            raise ConfigError(f"n_attn_layers must be >= 0, got {self.n_attn_layers}")
        if self.sample_size % self.factor or self.sample_size < self.min_length:
            raise ConfigError(
                f"sample_size must be a multiple of {self.factor} and at least {self.min_length}, "
                f"got {self.sample_size}"
            )
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or not 1 <= self.steps <= 1000):
            raise ConfigError(f"steps must be an integer in 1..1000 or null, got {self.steps!r}")
        if self.sampler is not None and (not isinstance(self.sampler, str) or not self.sampler):
            raise ConfigError(f"sampler must be a sampler name or null, got {self.sampler!r}")
        if isinstance(self.fade_out_ms, bool) or not isinstance(self.fade_out_ms, (int, float)) or not (
                0.0 <= self.fade_out_ms <= 1000.0):  # fmt: skip
            raise ConfigError(f"fade_out_ms must be a number of milliseconds in 0..1000, got {self.fade_out_ms!r}")
        object.__setattr__(self, "fade_out_ms", float(self.fade_out_ms))
        object.__setattr__(self, "tail_gate_db", check_tail_gate(self.tail_gate_db))
        for key, check in (("low_cut_hz", check_low_cut), ("high_cut_hz", check_high_cut),
                           ("fade_in_ms", check_fade_in)):
            corners = getattr(self, key)
            if not isinstance(corners, (list, tuple)) or len(corners) not in (0, len(self.categories)):
                raise ConfigError(f"{key} must be empty or hold one value per category ({len(self.categories)}), "
                                  f"got {corners!r}")
            object.__setattr__(self, key, tuple(check(hz) for hz in corners))
        for name, low, high in zip(self.categories, self.low_cut_hz or (), self.high_cut_hz or (), strict=False):
            if low and high and high <= low:
                raise ConfigError(f"category '{name}': high_cut_hz {high:g} must lie above low_cut_hz {low:g} "
                                  "(or be 0, none)")
        object.__setattr__(self, "guidance", check_guidance(self.guidance, bool(self.categories)))
        object.__setattr__(self, "guidance_interval", check_interval(self.guidance_interval))
        if self.sigma_max is not None:
            object.__setattr__(self, "sigma_max", check_sigma_max(self.sigma_max))
        if self.rho is not None:
            object.__setattr__(self, "rho", check_rho(self.rho))
        if not isinstance(self.level_cond, bool):
            raise ConfigError(f"level_cond must be true or false, got {self.level_cond!r}")
        if len(set(self.categories)) != len(self.categories):
            raise ConfigError(f"categories must be unique, got {list(self.categories)}")

    # --- derived facts -------------------------------------------------------------------------
    @property
    def factor(self) -> int:
        """Lengths must be a multiple of this (the patch, then one factor of two per down-sampling stage)."""
        return 2 ** (self.depth - 1) * self.patch

    @property
    def min_length(self) -> int:
        """Reflect padding needs at least three samples at the innermost level."""
        return 3 * self.factor

    @property
    def first_attn_level(self) -> int:
        """Lowest level (1 = full resolution) that has self-attention; above depth means none."""
        if self.n_attn_layers <= 0:
            return self.depth + 1
        return max(2, self.depth - self.n_attn_layers - 1)

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def in_channels(self) -> int:
        return self.io_channels + TIME_FEATURES + (CLASS_FEATURES if self.categories else 0)

    @property
    def io_channels(self) -> int:
        """Channels of the network's signal input and output: the audio channels times the patch."""
        return self.channels * self.patch

    @property
    def seconds(self) -> float:
        return self.sample_size / self.sample_rate

    def category_index(self, name: str) -> int:
        """Index of a category by name (case-insensitive); a clear error lists the allowed ones."""
        lowered = [c.lower() for c in self.categories]
        if not self.categories:
            raise ConfigError(f"model '{self.name}' is unconditional; category '{name}' cannot be chosen")
        if name.lower() not in lowered:
            raise ConfigError(f"category must be one of {list(self.categories)}, got '{name}'")
        return lowered.index(name.lower())

    def padded_length(self, samples: int) -> int:
        """Round a requested length up to what the network accepts; refuse lengths that are too short."""
        if samples <= 0:
            raise LengthError(f"length must be a positive number of samples, got {samples}")
        padded = max(self.min_length, math.ceil(samples / self.factor) * self.factor)
        return padded

    def length_for_seconds(self, seconds: float) -> int:
        """Samples at the model rate for a duration, checked against the model's minimum."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise LengthError(f"seconds must be a positive number, got {seconds}")
        samples = int(round(seconds * self.sample_rate))
        if samples < self.min_length:
            raise LengthError(
                f"seconds must be at least {self.min_length / self.sample_rate:.3f} for model '{self.name}' "
                f"({self.min_length} samples at {self.sample_rate} Hz), got {seconds}"
            )
        return samples

    def band_for(self, category: str | None) -> tuple[float, float]:
        """The band limits of ``category``'s sounds: (low cut, high cut) in Hz (0: none, also for None and for
        models without them)."""
        return band_of(self.categories, self.low_cut_hz, self.high_cut_hz, category)

    def fade_in_for(self, category: str | None) -> float:
        """The onset fade of ``category``'s sounds in ms (0: none, also for None and for models without them)."""
        return per_category(self.categories, self.fade_in_ms, category)

    # --- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["c_mults"] = list(self.c_mults)
        d["categories"] = list(self.categories)
        d["guidance_interval"] = list(self.guidance_interval)
        d["low_cut_hz"] = list(self.low_cut_hz)
        d["high_cut_hz"] = list(self.high_cut_hz)
        d["fade_in_ms"] = list(self.fade_in_ms)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)


def harmonai_config(name: str = "harmonai", sample_rate: int = 48000, sample_size: int = 65536) -> ModelConfig:
    """The layout shared by all six public Harmonai checkpoints (221,389,322 parameters)."""
    return ModelConfig(name=name, sample_rate=sample_rate, sample_size=sample_size)

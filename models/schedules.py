"""Noise schedules for v-diffusion, as arrays of continuous time t' in [0, 1] (NumPy only, no torch).

Conventions: alpha = cos(pi t'/2), sigma = sin(pi t'/2), so x_t = alpha * x0 + sigma * eps. k-diffusion's
noise level is sigma_k = sigma / alpha = tan(pi t'/2). Every schedule of ``steps`` steps is a float64 array
of ``steps + 1`` times, strictly descending from ``t_start`` to exactly 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from models.errors import ConfigError

KARRAS_RHO = 7.0
KARRAS_SIGMA_MIN = 1e-4  # sigma_k of the last non-zero step (the Dance Diffusion notebook's default)
# sigma_k cap when t_start = 1 (where sigma_k is infinite). The first step from pure noise costs a component
# of scale s a relative error of about (s / sigma_max)^2 / 2; tonal partials of a 65536-sample clip reach
# Fourier-component scales of tens, and benchmarks/samplers.py found 200 the best trade-off (80 left an
# error floor, 500 and up cost accuracy at 25 steps or fewer).
KARRAS_SIGMA_MAX = 200.0
SIGMA_MAX_RANGE = (1.0, 1000.0)  # what a model or a user may set instead (models record it: ModelConfig.sigma_max)
RHO_RANGE = (1.0, 50.0)  # likewise for rho (ModelConfig.rho): higher spends more of the steps at low noise


def _check_karras(name: str, value: object, bounds: tuple[float, float], meaning: str) -> float:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            low <= float(value) <= high):  # fmt: skip
        raise ConfigError(f"{name} must be a number in {low:g}..{high:g} ({meaning}), got {value!r}")
    return float(value)


def check_sigma_max(value: object) -> float:
    """A karras sigma_k cap: a number in SIGMA_MAX_RANGE."""
    return _check_karras("sigma_max", value, SIGMA_MAX_RANGE, "the karras schedule's highest noise level")


def check_rho(value: object) -> float:
    """A karras rho: a number in RHO_RANGE."""
    return _check_karras("rho", value, RHO_RANGE, "the karras schedule's spacing")


def alpha_sigma(t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Signal and noise scales (alpha, sigma) at v-diffusion time t'."""
    angle = np.asarray(t, dtype=np.float64) * (math.pi / 2)
    return np.cos(angle), np.sin(angle)


def t_to_ksigma(t: np.ndarray | float) -> np.ndarray:
    """k-diffusion noise level sigma_k = tan(pi t'/2) (infinite at t' = 1)."""
    alpha, sigma = alpha_sigma(t)
    with np.errstate(divide="ignore"):
        return np.where(alpha > 1e-15, sigma / np.maximum(alpha, 1e-300), np.inf)


def ksigma_to_t(ksigma: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`t_to_ksigma`: t' = atan(sigma_k) * 2 / pi (sigma_k may be inf)."""
    return np.arctan(np.asarray(ksigma, dtype=np.float64)) * (2 / math.pi)


def crash_t(u: np.ndarray | float) -> np.ndarray:
    """Map uniform u in [0, 1] through the CRASH schedule (Rouard & Hadjeres 2021) to t'."""
    sigma = np.sin(np.asarray(u, dtype=np.float64) * (math.pi / 2)) ** 2
    alpha = np.sqrt(1.0 - sigma**2)
    return np.arctan2(sigma, alpha) * (2 / math.pi)


def crash_u(t: float) -> float:
    """Inverse of :func:`crash_t`: the u whose crash time is t' (sigma = sin^2(pi u/2) = sin(pi t'/2))."""
    return float(np.arcsin(np.sqrt(np.sin(t * math.pi / 2))) * (2 / math.pi))


def _crash(steps: int, t_start: float) -> np.ndarray:
    # Uniform in u as Dance Diffusion samples it; for t_start < 1 the u range shrinks so t'[0] = t_start.
    return crash_t(np.linspace(crash_u(t_start), 0.0, steps + 1))


def _cosine(steps: int, t_start: float) -> np.ndarray:
    # Uniform in t', i.e. uniform in the angle of the (alpha, sigma) pair: plain v-diffusion spacing.
    return np.linspace(t_start, 0.0, steps + 1)


def _karras(steps: int, t_start: float, cap: float | None = None, rho: float | None = None) -> np.ndarray:
    # Karras et al. 2022 rho-spacing of sigma_k; the last step goes from sigma_min to exactly 0.
    rho = KARRAS_RHO if rho is None else rho
    sigma_max = min(float(t_to_ksigma(t_start)), KARRAS_SIGMA_MAX if cap is None else cap)
    sigma_min = min(KARRAS_SIGMA_MIN, sigma_max / 2)
    ramp = np.linspace(0.0, 1.0, steps)
    inv_rho = 1.0 / rho
    ksigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return np.append(ksigma_to_t(ksigmas), 0.0)


SCHEDULES: dict[str, Callable[[int, float], np.ndarray]] = {
    "crash": _crash,
    "cosine": _cosine,
    "karras": _karras,
}


def make_schedule(name: str, steps: int, t_start: float = 1.0, sigma_max: float | None = None,
                  rho: float | None = None) -> np.ndarray:
    """Times t' (float64, shape [steps + 1]) falling strictly from t_start to exactly 0 for schedule ``name``.

    ``sigma_max`` caps the karras schedule's sigma_k (default :data:`KARRAS_SIGMA_MAX`) and ``rho`` sets its
    spacing (default :data:`KARRAS_RHO`); the first step still starts at ``t_start``. The other schedules
    have neither and ignore them."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; allowed: {', '.join(sorted(SCHEDULES))}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(t_start, (int, float, np.floating)) or not 0.0 < float(t_start) <= 1.0:
        raise ConfigError(f"t_start must be in (0, 1], got {t_start!r}")
    if name == "karras" and (sigma_max is not None or rho is not None):
        ts = _karras(int(steps), float(t_start), None if sigma_max is None else check_sigma_max(sigma_max),
                     None if rho is None else check_rho(rho))
    else:
        ts = np.asarray(SCHEDULES[name](int(steps), float(t_start)), dtype=np.float64)
    ts[0], ts[-1] = float(t_start), 0.0  # exact endpoints, free of rounding in the mappings above
    if not np.all(np.diff(ts) < 0):
        raise ConfigError(
            f"schedule {name!r} with {steps} steps from t_start={t_start} is not strictly descending "
            "(too many steps for so small a t_start); use fewer steps or a larger t_start"
        )
    return ts

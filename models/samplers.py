"""Samplers for v-diffusion: pure NumPy functions of a denoiser, the start latent, a schedule and per-item RNGs.

Every sampler has the signature ``fn(denoise, x, ts, rngs, *, callback=None, cancel=None, **options)``:

- ``denoise(x, t) -> v``: x float32 [batch, channels, length], t float32 [batch] in t' units; returns the
  v-prediction v = alpha * eps - sigma * x0 with x's shape.
- ``x``: the latent at time ``ts[0]`` (alpha x0 + sigma eps; pure noise when ts[0] = 1).
- ``ts``: a schedule from :mod:`models.schedules` (N + 1 times, strictly descending, ending at 0).
- ``rngs``: one ``np.random.Generator`` per batch item. Fresh noise for item b comes only from ``rngs[b]``,
  so a seed gives the same audio whatever batch it runs in.
- ``callback(step_index, n_steps)`` runs after each step; ``step_index`` counts from 0 (the last call gets
  ``n_steps - 1``). ``cancel()`` is polled before each network evaluation; True raises :class:`Cancelled`.

Each sampler makes exactly N network evaluations and returns the clean sample at t' = 0 as float32. The
state is carried in float64; only the denoiser sees float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import ConfigError, DDError
from models.schedules import alpha_sigma

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]
Callback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]
# fn(denoise, x, ts, rngs, *, callback=None, cancel=None, **options) -> float32 clean sample
Sampler = Callable[..., np.ndarray]


class Cancelled(DDError):
    """The caller's cancel() returned True; the sampler stopped before its next network evaluation."""

    code = "cancelled"


# --- shared plumbing ----------------------------------------------------------------------------------


def _prepare(x: np.ndarray, ts: np.ndarray, n_items: int | None, descending: bool = True) -> tuple:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ConfigError(f"x must have shape [batch, channels, length], got shape {x.shape}")
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or len(ts) < 2 or not np.all(np.isfinite(ts)):
        raise ConfigError(f"ts must be a 1-D array of at least 2 finite times, got {ts!r}")
    steps = np.diff(ts)
    end, direction = (ts[-1], "descending") if descending else (ts[0], "ascending")
    if not (np.all(steps < 0) if descending else np.all(steps > 0)):
        raise ConfigError(f"ts must be strictly {direction}, got {ts.tolist()}")
    if end != 0.0 or ts.max() > 1.0:
        which = "end" if descending else "start"
        raise ConfigError(f"ts must {which} at exactly 0 and stay within [0, 1], got {ts.tolist()}")
    if n_items is not None and n_items != x.shape[0]:
        raise ConfigError(f"rngs must hold one generator per batch item ({x.shape[0]}), got {n_items}")
    return x.astype(np.float64), ts


def _option(name: str, value: float, low: float, high: float) -> float:
    value = float(value)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _evaluate(
    denoise: Denoiser, x: np.ndarray, t: float, cancel: CancelCheck | None, i: int, n: int
) -> np.ndarray:
    if cancel is not None and cancel():
        raise Cancelled(f"sampling cancelled before step {i + 1} of {n}")
    v = np.asarray(denoise(x.astype(np.float32), np.full(x.shape[0], t, dtype=np.float32)))
    if v.shape != x.shape:
        raise ConfigError(f"denoiser returned shape {v.shape}, expected the input's shape {x.shape}")
    return v.astype(np.float64)


def _noise(rngs: Sequence[np.random.Generator], shape: tuple[int, ...]) -> np.ndarray:
    # One draw per item from its own generator keeps each item's noise independent of the batch it is in.
    return np.stack([rng.standard_normal(shape[1:]) for rng in rngs])


def _log_snr(alpha: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    # lambda = log(alpha / sigma); only called for sigma > 0. alpha(t'=1) is 6e-17 in float64, not 0.
    return np.log(np.maximum(alpha, 1e-300)) - np.log(sigma)


# --- samplers -----------------------------------------------------------------------------------------


def sample_v_ddim(
    denoise: Denoiser,
    x: np.ndarray,
    ts: np.ndarray,
    rngs: Sequence[np.random.Generator],
    *,
    callback: Callback | None = None,
    cancel: CancelCheck | None = None,
    eta: float = 0.0,
) -> np.ndarray:
    """DDIM (Song et al. 2021, arXiv 2010.02502) in the v-parameterisation of Salimans & Ho 2022."""
    x, ts = _prepare(x, ts, len(rngs))
    eta = _option("eta", eta, 0.0, 1.0)
    alphas, sigmas = alpha_sigma(ts)
    n = len(ts) - 1
    for i in range(n):
        v = _evaluate(denoise, x, ts[i], cancel, i, n)
        x0 = alphas[i] * x - sigmas[i] * v
        eps = sigmas[i] * x + alphas[i] * v
        # eta scales the fresh noise from none (deterministic ODE) to the ancestral DDPM amount.
        ratio = 1.0 - alphas[i] ** 2 / alphas[i + 1] ** 2
        c = eta * sigmas[i + 1] / sigmas[i] * np.sqrt(max(ratio, 0.0))
        x = alphas[i + 1] * x0 + np.sqrt(max(sigmas[i + 1] ** 2 - c**2, 0.0)) * eps
        if c > 0:
            x = x + c * _noise(rngs, x.shape)
        if callback is not None:
            callback(i, n)
    return x.astype(np.float32)


# Adams-Bashforth weights on (newest, older, ...) eps estimates, orders 1 to 4.
_AB_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def sample_v_iplms(
    denoise: Denoiser,
    x: np.ndarray,
    ts: np.ndarray,
    rngs: Sequence[np.random.Generator],
    *,
    callback: Callback | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """Improved pseudo linear multistep on eps (PNDM, Liu et al. 2022; iPNDM warm-up, Zhang & Chen 2022).

    Adams-Bashforth on the eps estimates (orders 1, 2, 3, then 4 as history builds up; arXiv 2202.09778 and
    2204.13902), each step a DDIM transfer with the extrapolated eps, as in v-diffusion's IPLMS. Matches diffusers' ``IPNDMScheduler`` step for step on the crash schedule, including its one quirk:
    where alpha < 1e-8 (t' = 1) the data estimate (x - sigma eps) / alpha is taken as 0, so the first step
    from pure noise ignores the network's mean prediction (harmless for zero-mean audio).
    """
    x, ts = _prepare(x, ts, len(rngs))
    alphas, sigmas = alpha_sigma(ts)
    history: list[np.ndarray] = []
    n = len(ts) - 1
    for i in range(n):
        v = _evaluate(denoise, x, ts[i], cancel, i, n)
        eps = sigmas[i] * x + alphas[i] * v
        history = [eps, *history[:3]]
        eps_ab = sum(w * e for w, e in zip(_AB_WEIGHTS[len(history) - 1], history, strict=True))
        if alphas[i] < 1e-8:
            x0 = np.zeros_like(x)
        else:
            # (x - sigma eps_ab) / alpha, rewritten so the eps part of x cancels without losing digits.
            x0 = alphas[i] * x - sigmas[i] * v - sigmas[i] / alphas[i] * (eps_ab - eps)
        x = alphas[i + 1] * x0 + sigmas[i + 1] * eps_ab
        if callback is not None:
            callback(i, n)
    return x.astype(np.float32)


def _dpmpp_2m(
    denoise: Denoiser,
    x: np.ndarray,
    ts: np.ndarray,
    rngs: Sequence[np.random.Generator],
    callback: Callback | None,
    cancel: CancelCheck | None,
    eta: float,
) -> np.ndarray:
    # Shared body of DPM-Solver++(2M) (eta = 0) and its SDE variant (eta > 0), in VP form on log-SNR.
    x, ts = _prepare(x, ts, len(rngs))
    alphas, sigmas = alpha_sigma(ts)
    n = len(ts) - 1
    x0_prev, h_prev = None, 0.0
    for i in range(n):
        v = _evaluate(denoise, x, ts[i], cancel, i, n)
        x0 = alphas[i] * x - sigmas[i] * v
        if sigmas[i + 1] == 0.0:
            x = x0  # the last step lands on t' = 0, where the latent is its data estimate
        else:
            h = float(_log_snr(alphas[i + 1], sigmas[i + 1]) - _log_snr(alphas[i], sigmas[i]))
            decay = np.exp(-eta * h)
            gain = alphas[i + 1] * -np.expm1(-(1.0 + eta) * h)
            data = x0
            if x0_prev is not None:
                # Second order: extrapolate the data estimate linearly in log-SNR (h_prev / h = r).
                data = x0 + (h / h_prev) * 0.5 * (x0 - x0_prev)
            x = sigmas[i + 1] / sigmas[i] * decay * x + gain * data
            if eta > 0:
                x = x + sigmas[i + 1] * np.sqrt(-np.expm1(-2.0 * eta * h)) * _noise(rngs, x.shape)
            h_prev = h
        x0_prev = x0
        if callback is not None:
            callback(i, n)
    return x.astype(np.float32)


def sample_dpmpp_2m(
    denoise: Denoiser,
    x: np.ndarray,
    ts: np.ndarray,
    rngs: Sequence[np.random.Generator],
    *,
    callback: Callback | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095): second-order multistep on the data prediction."""
    return _dpmpp_2m(denoise, x, ts, rngs, callback, cancel, 0.0)


def sample_dpmpp_2m_sde(
    denoise: Denoiser,
    x: np.ndarray,
    ts: np.ndarray,
    rngs: Sequence[np.random.Generator],
    *,
    callback: Callback | None = None,
    cancel: CancelCheck | None = None,
    eta: float = 1.0,
) -> np.ndarray:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095); chosen over Euler ancestral for being second order.

    It is stable-audio-tools' default and reaches a given error in far fewer steps than first-order
    Euler ancestral; eta in [0, 1] scales the injected noise (0 gives plain DPM-Solver++(2M)).
    """
    return _dpmpp_2m(denoise, x, ts, rngs, callback, cancel, _option("eta", eta, 0.0, 1.0))


# --- inversion, interpolation, noising ----------------------------------------------------------------


def invert(
    denoise: Denoiser,
    x0: np.ndarray,
    ts_ascending: np.ndarray,
    *,
    callback: Callback | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """Deterministic DDIM inversion (Song et al. 2021, arXiv 2010.02502) of clean audio from t'=0 up to ts[-1]."""
    x, ts = _prepare(x0, ts_ascending, None, descending=False)
    alphas, sigmas = alpha_sigma(ts)
    n = len(ts) - 1
    for i in range(n):
        v = _evaluate(denoise, x, ts[i], cancel, i, n)
        x = alphas[i + 1] * (alphas[i] * x - sigmas[i] * v) + sigmas[i + 1] * (sigmas[i] * x + alphas[i] * v)
        if callback is not None:
            callback(i, n)
    return x.astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, w: float | np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985) per item and channel over time; w outside [0, 1] extrapolates.

    ``a`` and ``b`` are [batch, channels, length] (batch 1 broadcasts); ``w`` is a number or one weight per
    output item, shape [k], which gives k items.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or b.ndim != 3:
        raise ConfigError(f"slerp needs [batch, channels, length] arrays, got shapes {a.shape} and {b.shape}")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim > 1 or not np.all(np.isfinite(w)):
        raise ConfigError(f"w must be a finite number or a 1-D array of weights, got {w!r}")
    w = w.reshape(-1, 1, 1) if w.ndim == 1 else w
    try:
        np.broadcast_shapes(a.shape, b.shape, np.shape(w))
    except ValueError:
        raise ConfigError(
            f"cannot interpolate shapes {a.shape} and {b.shape} with weights {w.shape}"
        ) from None
    norm_a = np.linalg.norm(a, axis=-1, keepdims=True)
    norm_b = np.linalg.norm(b, axis=-1, keepdims=True)
    cos = np.sum(a * b, axis=-1, keepdims=True) / np.maximum(norm_a * norm_b, 1e-300)
    theta = np.arccos(np.clip(cos, -1.0, 1.0))
    sin = np.sin(theta)
    flat = sin < 1e-6  # (anti)parallel or zero vectors: no plane to rotate in, fall back to a straight line
    safe = np.where(flat, 1.0, sin)
    wa = np.where(flat, 1.0 - w, np.sin((1.0 - w) * theta) / safe)
    wb = np.where(flat, w, np.sin(w * theta) / safe)
    return (wa * a + wb * b).astype(np.float32)


def noise_to(x0: np.ndarray, t: float | np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Forward-diffuse clean audio to time t' (float or one per item): alpha x0 + sigma noise (Ho et al. 2020)."""
    x0, noise = np.asarray(x0, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    if x0.shape != noise.shape or x0.ndim != 3:
        raise ConfigError(
            f"x0 and noise must share a [batch, channels, length] shape, got {x0.shape}, {noise.shape}"
        )
    t = np.asarray(t, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != x0.shape[0]) or not np.all((t >= 0) & (t <= 1)):
        raise ConfigError(f"t must be a time in [0, 1] or one per batch item ({x0.shape[0]}), got {t!r}")
    alpha, sigma = alpha_sigma(t.reshape(-1, 1, 1) if t.ndim == 1 else t)
    return (alpha * x0 + sigma * noise).astype(np.float32)


# --- analytic reference -------------------------------------------------------------------------------


def gaussian_denoiser(mu: float | np.ndarray, s: float | np.ndarray) -> Denoiser:
    """The exact v-prediction when data x0 ~ N(mu, s^2) elementwise: a closed-form stand-in for a network."""
    mu, s = np.asarray(mu, dtype=np.float64), np.asarray(s, dtype=np.float64)
    if np.any(s <= 0):
        raise ConfigError(f"s must be > 0, got {s!r}")

    def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        alpha, sigma = alpha_sigma(np.asarray(t, dtype=np.float64).reshape(-1, 1, 1))
        centred = np.asarray(x, dtype=np.float64) - alpha * mu
        var = alpha**2 * s**2 + sigma**2  # variance of x_t
        x0_hat = mu + alpha * s**2 * centred / var
        eps_hat = sigma * centred / var
        return (alpha * eps_hat - sigma * x0_hat).astype(np.float32)

    return denoise


def gaussian_flow_x0(x: np.ndarray, t: float, mu: float | np.ndarray, s: float | np.ndarray) -> np.ndarray:
    """Exact probability-flow ODE solution at t'=0 from latent x at time t, for data x0 ~ N(mu, s^2)."""
    # In 1-D the flow is the monotone map between the Gaussian marginals N(alpha mu, alpha^2 s^2 + sigma^2)
    # and N(mu, s^2): standardise, then rescale.
    alpha, sigma = alpha_sigma(t)
    return mu + s * (np.asarray(x, dtype=np.float64) - alpha * mu) / np.sqrt(alpha**2 * s**2 + sigma**2)


# --- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler: its function and the defaults the companion uses for it."""

    fn: Sampler
    stochastic: bool  # draws fresh noise from rngs with its default options
    default_schedule: str
    default_steps: int
    summary: str
    options: tuple[str, ...] = ()  # keyword options fn accepts beyond callback and cancel


# Defaults from benchmarks/samplers.py (analytic audio-like models; error relative to 100 v-iplms steps on
# the crash schedule, the notebook's and diffusers' default): v-iplms on karras needs about 30 steps for the
# same error, dpmpp-2m about 50, the SDE about 75 for the same spectral error; v-ddim stays first order.
SAMPLERS: dict[str, SamplerInfo] = {
    "v-ddim": SamplerInfo(
        sample_v_ddim,
        False,
        "crash",
        100,
        "DDIM, first order; the training demos' sampler. eta > 0 adds fresh noise",
        ("eta",),
    ),
    "v-iplms": SamplerInfo(
        sample_v_iplms,
        False,
        "karras",
        30,
        "4th-order multistep (iPNDM); crash x 100 reproduces the notebook/diffusers, karras x 30 matches it",
    ),
    "dpmpp-2m": SamplerInfo(
        sample_dpmpp_2m,
        False,
        "karras",
        50,
        "DPM-Solver++(2M), second-order multistep on the data estimate",
    ),
    "dpmpp-2m-sde": SamplerInfo(
        sample_dpmpp_2m_sde,
        True,
        "karras",
        75,
        "DPM-Solver++(2M) SDE, stochastic: fresh noise each step from the item's seed",
        ("eta",),
    ),
}

# The fastest to converge in the benchmark, on both the linear and the non-linear analytic model; it is
# also the notebook's own algorithm, so only the schedule and step count differ from upstream.
DEFAULT_SAMPLER = "v-iplms"


def get_sampler(name: str) -> SamplerInfo:
    """The :class:`SamplerInfo` registered under ``name``."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sample(
    name: str,
    denoise: Denoiser,
    x: np.ndarray,
    ts: np.ndarray,
    rngs: Sequence[np.random.Generator],
    *,
    callback: Callback | None = None,
    cancel: CancelCheck | None = None,
    **options: Any,
) -> np.ndarray:
    """Run sampler ``name`` after checking that its options are ones it accepts."""
    info = get_sampler(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        allowed = ", ".join(info.options) or "none"
        raise ConfigError(f"sampler {name!r} has no option {', '.join(unknown)}; allowed: {allowed}")
    return info.fn(denoise, x, ts, rngs, callback=callback, cancel=cancel, **options)

"""Seeded procedural one-shots (drums, bass, synth, fx): the data recipe of the embedded default model.

Every sound is a pure function of its category, a NumPy generator, the length and the sample rate, so a
trainer can draw unlimited fresh examples and a test can rebuild any one of them. Each category is a
small family of voices (e.g. "bass" is sub, 808, reese, pluck or FM) with randomised pitch, envelope,
tone, noise colour, click, drive, layering and stereo image. The DSP is vectorised NumPy with no
per-sample Python loop: oscillators come from a cumulative phase (polyBLEP saws, float32 sines), fixed
filters are zero-phase magnitude responses applied in one FFT, sweeping filters are applied frame by
frame in a short-time spectrum, coloured noise is drawn directly as a spectrum (one inverse FFT), and
oscillators are only computed while their envelope is above -80 dB. About 1-10 ms per second of audio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from models.errors import ConfigError

CATEGORIES: tuple[str, ...] = (
    "kick", "snare", "clap", "closed_hat", "open_hat", "tom", "perc", "bass", "synth", "fx",
)  # fmt: skip
MIN_LENGTH = 64
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
PEAK_DBFS = (-6.0, -1.0)  # every sound is peak-normalised to a level drawn from this range

_TAU = 2.0 * np.pi
_N_FFT = 512  # short-time frame of sweeping filters: 11.6 ms at 44.1 kHz, hop half of it
Gain = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (times [F, 1] s, freqs [1, B] Hz) -> gains
Voice = Callable[[np.random.Generator, int, int], np.ndarray]  # (rng, n, sr) -> float64 [2, n]


# --- a small DSP kit -------------------------------------------------------------------------------------
def _fast_len(n: int) -> int:
    """Smallest 2^a·3^b·5^c >= n: FFT sizes that numpy transforms quickly."""
    best, p5 = 1 << max(0, (n - 1).bit_length()), 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best, p35 = min(best, p), p35 * 3
        p5 *= 5
    return best


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad (or cut) the last axis to n samples."""
    out = np.zeros((*x.shape[:-1], n))
    m = min(n, x.shape[-1])
    out[..., :m] = x[..., :m]
    return out


def _env(n: int, sr: int, decay: float, attack: float = 0.0, hold: float = 0.0, power: float = 1.0) -> np.ndarray:
    """Linear attack, hold, then exp(-(t/decay)^power): power > 1 gives tighter, gated-sounding tails."""
    t = np.arange(n) / sr
    e = np.exp(-np.minimum((np.maximum(t - attack - hold, 0.0) / decay) ** power, 60.0))  # no denormals
    return e * np.minimum(t / attack, 1.0) if attack > 0 else e


def _active(env: np.ndarray, floor: float = 1e-4) -> int:
    """Number of samples until the envelope falls below -80 dB for good."""
    idx = np.flatnonzero(env > floor)
    return int(idx[-1]) + 1 if idx.size else 1


def _cycles(freq: float | np.ndarray, sr: int, n: int) -> np.ndarray:
    """Running phase in cycles for a constant or per-sample frequency (last axis), starting at 0."""
    f = np.asarray(freq, dtype=float)
    if f.ndim == 0 or f.shape[-1] == 1:
        return f * (np.arange(n) / sr)
    c = np.cumsum(f, axis=-1) / sr
    return c - c[..., :1]


def _frac(cycles: np.ndarray) -> np.ndarray:
    return cycles - np.floor(cycles)  # much faster than `% 1.0` on float arrays


def _sin(cycles: np.ndarray) -> np.ndarray:
    """sin(2*pi*cycles): the phase is wrapped in float64, the sine is taken in (SIMD-fast) float32."""
    return np.sin((_TAU * _frac(cycles)).astype(np.float32))


def _saw(cycles: np.ndarray, dt: np.ndarray | float) -> np.ndarray:
    """Naive saw minus the polynomial band-limited step residual (polyBLEP), which removes most aliasing:
    -(1 - t/dt)^2 just after the wrap, (1 + (t-1)/dt)^2 just before it; dt = f / sr < 0.5."""
    t = _frac(cycles).astype(np.float32)
    inv = (1.0 / np.asarray(dt)).astype(np.float32)
    after = np.maximum(1.0 - t * inv, 0.0)
    before = np.maximum(1.0 + (t - 1.0) * inv, 0.0)
    return 2.0 * t - 1.0 + after * after - before * before


def _pulse(cycles: np.ndarray, dt: np.ndarray | float, width: float = 0.5) -> np.ndarray:
    """Band-limited pulse of duty cycle `width` as the difference of two shifted saws (zero mean)."""
    return _saw(cycles, dt) - _saw(cycles + width, dt)


def _lp(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def _hp(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1e-3)) ** (2 * order))


def _bp(f: np.ndarray, fc: float, q: float) -> np.ndarray:
    r = np.maximum(f, 1e-3) / fc
    return 1.0 / np.sqrt(1.0 + q * q * (r - 1.0 / r) ** 2)


def _reslp(f: np.ndarray, fc: np.ndarray | float, q: float) -> np.ndarray:
    """Magnitude of a resonant two-pole low-pass (peak of about q at the cutoff)."""
    r = f / fc
    return 1.0 / np.sqrt((1.0 - r * r) ** 2 + (r / q) ** 2)


def _filter(x: np.ndarray, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Fixed zero-phase filter on the last axis; 20 ms of padding keeps the tail from wrapping."""
    n = x.shape[-1]
    m = _fast_len(n + sr // 50)
    spec = np.fft.rfft(x, m, axis=-1) * gain(np.fft.rfftfreq(m, 1.0 / sr))
    return np.fft.irfft(spec, m, axis=-1)[..., :n]


def _white(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """Stereo unit-variance white noise [2, n] whose channels have correlation rho (1 = mono)."""
    z = (rng.random((2, n)) - 0.5) * np.sqrt(12.0)  # uniform: turns Gaussian after any filter, and is cheap
    z[1] = rho * z[0] + np.sqrt(1.0 - rho * rho) * z[1]
    return z


def _noise(rng: np.random.Generator, n: int, sr: int, colour: Callable[[np.ndarray], np.ndarray],
           rho: float = 0.0) -> np.ndarray:  # fmt: skip
    """Stereo noise [2, n] of unit mean power shaped by the magnitude response colour(f); rho is the L/R
    correlation. Drawn straight in the frequency domain, so it costs one inverse FFT (it is circular,
    which stationary noise does not mind)."""
    m = _fast_len(n)
    return np.fft.irfft(_noise_spectrum(rng, m, colour(np.fft.rfftfreq(m, 1.0 / sr)), rho), m, axis=-1)[..., :n]


def _noise_spectrum(rng: np.random.Generator, m: int, g: np.ndarray, rho: float) -> np.ndarray:
    """rfft [2, m // 2 + 1] of unit-variance stereo noise of FFT size m through the magnitude response g."""
    z = _white(rng, 2 * (m // 2 + 1), rho)  # real and imaginary parts, uniform: Gaussian after the sum
    return (z[:, 0::2] + 1j * z[:, 1::2]) * (g * (0.5 * m / np.sqrt(max(float(np.sum(g * g)), 1e-12))))


def _sweep(x: np.ndarray, sr: int, gain: Gain) -> np.ndarray:
    """Time-varying zero-phase filter on the last axis, frame by frame in a short-time spectrum
    (square-root Hann windows at half overlap, so analysis times synthesis windows sum to one)."""
    n, hop = x.shape[-1], _N_FFT // 2
    count = -(-(n + _N_FFT) // hop) + 1
    padded = np.zeros((*x.shape[:-1], count * hop + _N_FFT))
    padded[..., _N_FFT : _N_FFT + n] = x
    win = np.sin(np.pi * np.arange(_N_FFT) / _N_FFT)  # the square root of a periodic Hann window
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT, axis=-1)[..., ::hop, :][..., :count, :]
    times = ((np.arange(count) * hop - _N_FFT / 2) / sr)[:, None]
    spec = np.fft.rfft(frames * win, axis=-1) * gain(times, np.fft.rfftfreq(_N_FFT, 1.0 / sr)[None, :])
    frames = np.fft.irfft(spec, _N_FFT, axis=-1) * win
    out = np.zeros_like(padded)
    for k in range(2):  # every other frame tiles the timeline without overlap
        flat = frames[..., k::2, :].reshape(*x.shape[:-1], -1)
        out[..., k * hop : k * hop + flat.shape[-1]] += flat
    return out[..., _N_FFT : _N_FFT + n]


def _convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    m = _fast_len(n + ir.shape[-1])
    return np.fft.irfft(np.fft.rfft(x, m, axis=-1) * np.fft.rfft(ir, m, axis=-1), m, axis=-1)[..., :n]


def _reverb(x: np.ndarray, rng: np.random.Generator, sr: int, decay: float, damp: float = 6000.0) -> np.ndarray:
    """Wet signal of a decorrelated stereo reverb: exponentially decaying noise, darkened above `damp` Hz.

    The tail is band-limited to a quarter of the sample rate, so its impulse response is drawn at half the
    rate: the FFT of a response half as long has exactly the bin spacing of the first half of x's FFT.
    """
    n = x.shape[-1]
    m = min(n, int(4 * decay * sr) + 1) // 2 + 1  # -35 dB, at sr / 2
    ir = _white(rng, m, 0.1) * np.exp(-np.arange(m) * (2.0 / (decay * sr)))
    ir /= np.sqrt(np.sum(ir * ir, axis=-1, keepdims=True))
    size = 2 * _fast_len(-(-max(n + 2 * m, 64) // 2))
    low = size // 4 + 1
    spec = np.zeros((x.shape[0], size // 2 + 1), dtype=complex)
    spec[:, :low] = np.fft.rfft(x, size, axis=-1)[:, :low] * np.fft.rfft(ir, size // 2, axis=-1)
    spec[:, :low] *= _lp(np.fft.rfftfreq(size, 1.0 / sr)[:low], min(damp, 0.2 * sr), 2)
    return np.fft.irfft(spec, size, axis=-1)[..., :n]


def _delay(x: np.ndarray, sr: int, seconds: float, feedback: float, taps: int = 4) -> np.ndarray:
    """Ping-pong echoes: each repeat swaps the channels and is `feedback` quieter."""
    out, n, d = x.copy(), x.shape[-1], max(1, int(seconds * sr))
    for k in range(1, taps + 1):
        if k * d >= n:
            break
        src = x[::-1] if k % 2 else x
        out[:, k * d :] += feedback**k * src[:, : n - k * d]
    return out


def _drive(x: np.ndarray, amount: float) -> np.ndarray:
    """tanh saturation at a level-independent drive; amount 0 leaves the signal untouched."""
    peak = float(np.max(np.abs(x)))
    if amount < 1e-3 or peak == 0.0:
        return x
    return np.tanh(amount * x / peak) * (peak / np.tanh(amount))


def _pan(mono: np.ndarray, position: float) -> np.ndarray:
    """Constant-power pan of a mono signal; position in -1 (left) .. 1 (right), 0 keeps unity gain."""
    a = (position + 1.0) * np.pi / 4.0
    return np.stack([np.cos(a) * mono, np.sin(a) * mono]) * np.sqrt(2.0)


def _midi_hz(note: float | np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=float) - 69.0) / 12.0)


def _click(rng: np.random.Generator, n: int, sr: int, fc: float, tau: float, q: float = 1.0) -> np.ndarray:
    """A band-passed noise tick of time constant tau: beater, stick or pick attack."""
    m = min(n, int(8 * tau * sr) + 1)
    fc = min(fc, 0.4 * sr)
    tick = _noise(rng, m, sr, lambda f: _bp(f, fc, q), rho=rng.uniform(0.6, 1.0))
    return _fit(tick * np.exp(-np.arange(m) / (tau * sr)), n)


def _membrane(t: np.ndarray, sr: int, freq: np.ndarray, env: np.ndarray, ratios: Sequence[float],
              amps: Sequence[float]) -> np.ndarray:  # fmt: skip
    """Drum-head modes: partials at inharmonic ratios over one pitch contour, higher ones dying faster."""
    cyc = _cycles(freq, sr, t.size)
    return sum(a * _sin(r * cyc) * env ** (1.0 + 0.7 * i) for i, (r, a) in enumerate(zip(ratios, amps, strict=True)))


# --- drums -------------------------------------------------------------------------------------------------
def _kick(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.05, 0.3), hold=rng.uniform(0.0, 0.04), power=rng.uniform(1.0, 2.2))
    a = _active(env)
    t = np.arange(a) / sr
    f_end = rng.uniform(38.0, 75.0)
    freq = f_end + (min(f_end * rng.uniform(2.5, 7.0), 480.0) - f_end) * np.exp(-t / rng.uniform(0.008, 0.06))
    cyc = _cycles(freq, sr, a) + rng.choice([0.0, 0.25])  # cosine start gives a harder front
    body = (_sin(cyc) + rng.uniform(0.0, 0.3) * _sin(2 * cyc)) * env[:a]
    if rng.random() < 0.35:  # a longer sub layer under a short punchy kick
        body += rng.uniform(0.2, 0.6) * _sin(f_end * t) * _env(a, sr, rng.uniform(0.2, 0.6), attack=0.004)
    body = _drive(body, rng.uniform(0.5, 5.0) if rng.random() < 0.6 else 0.0)
    click = _click(rng, a, sr, rng.uniform(1500.0, 7000.0), rng.uniform(0.001, 0.005), rng.uniform(0.5, 2.0))
    return _fit(body + rng.uniform(0.03, 0.35) * click, n)


def _snare(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    tone_env = _env(n, sr, rng.uniform(0.03, 0.14))
    a = _active(tone_env)
    t = np.arange(a) / sr
    freq = rng.uniform(150.0, 280.0) * (1.0 + rng.uniform(0.1, 0.6) * np.exp(-t / rng.uniform(0.005, 0.02)))
    tone = _membrane(t, sr, freq, tone_env[:a], (1.0, rng.uniform(1.45, 1.85)), (1.0, rng.uniform(0.2, 0.8)))
    noise_env = _env(n, sr, rng.uniform(0.05, 0.28), power=rng.uniform(1.0, 1.8))
    b = _active(noise_env)
    hp, lp, wire = rng.uniform(400.0, 2500.0), min(rng.uniform(5000.0, 14000.0), 0.45 * sr), rng.uniform(0.0, 0.8)
    wires_fc = min(rng.uniform(3000.0, 7000.0), 0.4 * sr)
    noise = _noise(rng, b, sr, lambda f: _hp(f, hp) * _lp(f, lp) * (1 + wire * _bp(f, wires_fc, 2.0)),
                   rho=rng.uniform(0.5, 0.95)) * noise_env[:b]  # fmt: skip
    out = _fit(rng.uniform(0.3, 1.0) * tone, n) + _fit(rng.uniform(0.15, 0.45) * noise, n)
    if rng.random() < 0.5:
        out += rng.uniform(0.08, 0.3) * _reverb(out, rng, sr, rng.uniform(0.1, 0.45))
    return _drive(out, rng.uniform(0.0, 2.5))


def _clap(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    bursts = int(rng.integers(3, 6))
    onsets = np.concatenate([[0.0], np.cumsum(rng.uniform(0.006, 0.014, bursts - 1))])
    burst_tau, tail_tau = rng.uniform(0.002, 0.006), rng.uniform(0.05, 0.3)
    a = min(n, int((onsets[-1] + 10 * tail_tau) * sr) + 1)
    t = np.arange(a) / sr
    lag = t[None, :] - onsets[:, None]
    taus = np.concatenate([np.full(bursts - 1, burst_tau), [tail_tau]])[:, None]
    env = np.sum(np.where(lag >= 0, np.exp(-np.maximum(lag, 0) / taus), 0.0) * rng.uniform(0.6, 1.0, (bursts, 1)), 0)
    fc, q, air = rng.uniform(800.0, 2200.0), rng.uniform(0.7, 2.5), rng.uniform(0.0, 0.4)
    hp_air = min(4000.0, 0.4 * sr)
    out = _fit(_noise(rng, a, sr, lambda f: _bp(f, fc, q) + air * _hp(f, hp_air), rho=rng.uniform(0.2, 0.8)) * env, n)
    out += rng.uniform(0.15, 0.5) * _reverb(out, rng, sr, rng.uniform(0.1, 0.5), damp=rng.uniform(3000.0, 9000.0))
    return _drive(out, rng.uniform(0.0, 2.0))


_METAL_HZ = np.array([205.3, 304.4, 369.6, 522.7, 540.0, 800.0])  # six squares of a classic analog hat


def _hat(rng: np.random.Generator, n: int, sr: int, decay: tuple[float, float]) -> np.ndarray:
    env = _env(n, sr, rng.uniform(*decay), power=rng.uniform(1.0, 1.8))
    a = _active(env)
    t = np.arange(a) / sr
    if rng.random() < 0.6:  # square-wave cluster: aliasing of naive squares only adds to the metal
        freqs = (_METAL_HZ * rng.uniform(0.7, 1.8) * rng.uniform(0.97, 1.03, (2, 6))).astype(np.float32)
        cyc = freqs[..., None] * t.astype(np.float32) + rng.random((2, 6, 1), dtype=np.float32)  # float32: fast
        metal = np.sum(np.where(_frac(cyc) < 0.5, np.float32(1.0), np.float32(-1.0)), axis=1)
    else:  # inharmonic FM pair
        fc = np.array([1.0, rng.uniform(0.99, 1.01)]) * rng.uniform(3000.0, 8000.0)
        fm = fc * rng.uniform(1.3, 3.7)
        metal = _sin(fc[:, None] * t + rng.uniform(0.3, 1.3) * _sin(fm[:, None] * t)) * 3.0
    hp, order = min(np.exp(rng.uniform(np.log(3000.0), np.log(11000.0))), 0.35 * sr), int(rng.integers(2, 5))
    lp = min(hp * rng.uniform(1.6, 3.0), 0.45 * sr) if rng.random() < 0.4 else 0.45 * sr  # darker, lo-fi hats
    sizzle, sizzle_fc = rng.uniform(0.0, 2.0), min(rng.uniform(6000.0, 13000.0), 0.4 * sr)

    def colour(f: np.ndarray) -> np.ndarray:
        return _hp(f, hp, order) * _lp(f, lp, 2) * (1.0 + sizzle * _bp(f, sizzle_fc, 3.0))

    size = _fast_len(a + sr // 50)  # metal and noise share one filter and one inverse FFT
    g = colour(np.fft.rfftfreq(size, 1.0 / sr))
    metal = np.fft.rfft(metal, size, axis=-1) * g
    metal_rms = np.sqrt(2.0 * np.sum(np.abs(metal) ** 2, axis=-1, keepdims=True) / (size * a)) + 1e-12  # Parseval
    mix = rng.uniform(0.1, 0.9)
    spec = (1 - mix) * metal / metal_rms + mix * _noise_spectrum(rng, size, g, rng.uniform(0.3, 0.9))
    out = np.fft.irfft(spec, size, axis=-1)[:, :a] * env[:a]
    return _fit(_drive(out, rng.uniform(0.0, 2.0)), n)


def _closed_hat(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _hat(rng, n, sr, (0.01, 0.07))


def _open_hat(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _hat(rng, n, sr, (0.12, 0.6))


def _tom(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.12, 0.55), power=rng.uniform(1.0, 1.5))
    a = _active(env)
    t = np.arange(a) / sr
    freq = rng.uniform(70.0, 280.0) * (1.0 + rng.uniform(0.15, 1.0) * np.exp(-t / rng.uniform(0.02, 0.15)))
    amps = (1.0, rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.2))
    body = _membrane(t, sr, freq, env[:a], (1.0, 1.59, 2.14, 2.30), amps)
    body = _drive(body, rng.uniform(0.0, 2.5)) + rng.uniform(0.05, 0.3) * _click(
        rng, a, sr, rng.uniform(1000.0, 5000.0), rng.uniform(0.002, 0.008))[0]  # fmt: skip
    out = _fit(_pan(body, rng.uniform(-0.5, 0.5)), n)
    if rng.random() < 0.4:
        out += rng.uniform(0.05, 0.25) * _reverb(out, rng, sr, rng.uniform(0.15, 0.5))
    return out


# --- percussion: one small voice per instrument, picked at random -----------------------------------------
def _rim(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.008, 0.035))
    a = _active(env)
    t = np.arange(a) / sr
    f = rng.uniform(380.0, 620.0)
    tone = (_sin(f * t) + rng.uniform(0.3, 0.8) * _sin(f * rng.uniform(2.8, 3.6) * t)) * env[:a]
    mono = _drive(tone + rng.uniform(0.1, 0.5) * _click(rng, a, sr, rng.uniform(2500.0, 6000.0), 0.004, 1.5)[0],
                  rng.uniform(1.0, 4.0))  # fmt: skip
    return _fit(_pan(mono, rng.uniform(-0.4, 0.4)), n)


def _cowbell(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = 0.6 * _env(n, sr, rng.uniform(0.01, 0.03)) + 0.4 * _env(n, sr, rng.uniform(0.08, 0.35))
    a = _active(env)
    f1 = rng.uniform(520.0, 600.0) * rng.uniform(0.8, 1.3)
    freqs = np.array([[f1], [f1 * 1.48]])
    src = np.sum(_pulse(_cycles(freqs, sr, a), freqs / sr), axis=0)
    fc, q = min(f1 * 1.48 * rng.uniform(1.0, 1.8), 0.4 * sr), rng.uniform(1.5, 3.5)
    mono = _drive(_filter(src, sr, lambda f: _bp(f, fc, q)) * env[:a], rng.uniform(0.0, 2.0))
    return _fit(_pan(mono, rng.uniform(-0.5, 0.5)), n)


def _shaker(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.03, 0.12), attack=rng.uniform(0.001, 0.004), power=2.0)
    if rng.random() < 0.5:  # a second, softer grain: the shaker swung back
        lag, gain = int(rng.uniform(0.02, 0.06) * sr), rng.uniform(0.3, 0.7)
        if lag < n:  # a window shorter than the lag (a tiny training window) has no room for it
            env[lag:] += gain * env[: n - lag]
    a = _active(env)
    hp, lp = min(rng.uniform(3500.0, 9000.0), 0.35 * sr), min(rng.uniform(10000.0, 16000.0), 0.45 * sr)
    return _fit(_noise(rng, a, sr, lambda f: _hp(f, hp, 3) * _lp(f, lp), rho=rng.uniform(0.3, 0.8)) * env[:a], n)


def _woodblock(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.015, 0.07))
    a = _active(env)
    t = np.arange(a) / sr
    freq = min(rng.uniform(700.0, 2600.0), 0.2 * sr) * (1.0 + 0.15 * np.exp(-t / 0.003))
    mono = _membrane(t, sr, freq, env[:a], (1.0, rng.uniform(2.5, 3.0)), (1.0, rng.uniform(0.1, 0.5)))
    return _fit(_pan(mono + 0.15 * _click(rng, a, sr, 4000.0, 0.002)[0], rng.uniform(-0.5, 0.5)), n)


def _conga(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.08, 0.35))
    a = _active(env)
    t = np.arange(a) / sr
    freq = rng.uniform(170.0, 450.0) * (1.0 + rng.uniform(0.0, 0.3) * np.exp(-t / 0.01))
    mono = _membrane(t, sr, freq, env[:a], (1.0, 1.5, 1.98), (1.0, rng.uniform(0.1, 0.4), rng.uniform(0.0, 0.2)))
    mono += rng.uniform(0.0, 0.5) * _click(rng, a, sr, rng.uniform(1000.0, 3000.0), rng.uniform(0.003, 0.01))[0]
    return _fit(_pan(mono, rng.uniform(-0.6, 0.6)), n)


def _bell(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.15, 0.7))
    a = _active(env)
    t = np.arange(a) / sr
    fc = rng.uniform(500.0, 1600.0)
    index = rng.uniform(1.0, 5.0) * np.exp(-t / rng.uniform(0.02, 0.15))
    mono = _sin(fc * t + index / _TAU * _sin(fc * rng.uniform(1.4, 3.6) * t)) * env[:a]
    return _fit(_pan(mono, rng.uniform(-0.6, 0.6)), n)


_PERC: tuple[Voice, ...] = (_rim, _cowbell, _shaker, _woodblock, _conga, _bell)


def _perc(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _PERC[int(rng.integers(len(_PERC)))](rng, n, sr)


# --- bass: one-shot notes ---------------------------------------------------------------------------------
def _bass_sub(rng: np.random.Generator, n: int, sr: int, f: float) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.2, 1.0), attack=rng.uniform(0.001, 0.003), hold=rng.uniform(0.05, 0.4),
               power=rng.uniform(1.0, 2.0))  # fmt: skip
    a = _active(env)
    cyc = f * np.arange(a) / sr
    mono = _sin(cyc) + rng.uniform(0.0, 0.2) * _sin(2 * cyc) + rng.uniform(0.0, 0.1) * _sin(3 * cyc)
    return _fit(np.stack([mono, mono]) * env[:a], n)


def _bass_808(rng: np.random.Generator, n: int, sr: int, f: float) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.3, 1.2), hold=rng.uniform(0.02, 0.2), power=rng.uniform(1.0, 2.0))
    a = _active(env)
    t = np.arange(a) / sr
    freq = f * (1.0 + rng.uniform(0.2, 1.5) * np.exp(-t / rng.uniform(0.01, 0.08)))  # glide down onto the note
    mono = _drive(_sin(_cycles(freq, sr, a) + 0.25) * env[:a], rng.uniform(1.0, 6.0))
    mono += rng.uniform(0.0, 0.15) * _click(rng, a, sr, rng.uniform(1000.0, 4000.0), 0.002)[0]
    return _fit(np.stack([mono, mono]), n)


def _bass_reese(rng: np.random.Generator, n: int, sr: int, f: float) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.05, 0.3), attack=rng.uniform(0.001, 0.004),
               hold=rng.uniform(0.15, 0.6) * n / sr, power=2.0)  # fmt: skip
    a = _active(env)
    voices, cents = int(rng.integers(2, 4)), rng.uniform(5.0, 25.0)
    freqs = f * 2.0 ** (rng.uniform(-cents, cents, (2, voices, 1)) / 1200.0)
    saws = np.sum(_saw(_cycles(freqs, sr, a) + rng.random((2, voices, 1)), freqs / sr), axis=1) / voices
    lp, q = min(f * rng.uniform(3.0, 15.0), 2500.0), rng.uniform(0.7, 2.0)
    mid_side = np.stack([saws[0] + saws[1], saws[0] - saws[1]]) / 2
    side_hp = max(200.0, 2.5 * f)  # fundamental and octave stay mono
    mid_side = _filter(mid_side, sr, lambda fr: _reslp(fr, lp, q) * np.stack([np.ones_like(fr), _hp(fr, side_hp, 4)]))
    mid = mid_side[0] + rng.uniform(0.0, 0.7) * _sin(f * np.arange(a) / sr)  # plus a sub; the lows stay mono
    return _fit(_drive(np.stack([mid + mid_side[1], mid - mid_side[1]]) * env[:a], rng.uniform(0.0, 3.0)), n)


def _bass_pluck(rng: np.random.Generator, n: int, sr: int, f: float) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.12, 0.6), attack=0.001)
    a = _active(env)
    cyc = _cycles(f, sr, a)
    osc = _saw(cyc, f / sr) if rng.random() < 0.5 else _pulse(cyc, f / sr, rng.uniform(0.15, 0.5))
    base, sweep, tau, q = f * rng.uniform(1.5, 3.0), rng.uniform(600.0, 5000.0), rng.uniform(0.03, 0.25), \
        rng.uniform(0.7, 4.0)  # fmt: skip
    osc = _sweep(osc, sr, lambda t, fr: _reslp(fr, base + sweep * np.exp(-np.maximum(t, 0) / tau), q)) * env[:a]
    return _fit(np.stack([osc, osc]), n)


def _bass_fm(rng: np.random.Generator, n: int, sr: int, f: float) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.2, 0.9), attack=0.001, hold=rng.uniform(0.0, 0.2))
    a = _active(env)
    t = np.arange(a) / sr
    index = rng.uniform(1.0, 6.0) * np.exp(-t / rng.uniform(0.03, 0.3)) + rng.uniform(0.0, 1.0)
    mono = _sin(f * t + index / _TAU * _sin(f * rng.choice([0.5, 1.0, 2.0, 3.0]) * t)) * env[:a]
    return _fit(np.stack([mono, mono]), n)


_BASS = (_bass_sub, _bass_808, _bass_reese, _bass_pluck, _bass_fm)


def _bass(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f = float(_midi_hz(rng.integers(28, 52)))  # E1 .. D#3
    return _BASS[int(rng.integers(len(_BASS)))](rng, n, sr, f)


# --- synth: plucks, stabs, leads and keys, single notes or chords -----------------------------------------
_CHORDS = ((0,), (0,), (0, 12), (0, 7), (0, 4, 7), (0, 3, 7), (0, 3, 7, 10), (0, 4, 7, 11), (0, 2, 7), (0, 5, 7),
           (0, 3, 7, 14), (0, 4, 7, 14))  # fmt: skip


def _synth(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    notes = np.array(_CHORDS[int(rng.integers(len(_CHORDS)))]) + int(rng.integers(48, 73))
    if notes.size > 2 and rng.random() < 0.5:  # an inversion
        notes[: int(rng.integers(1, notes.size))] += 12
    style = int(rng.integers(4))  # 0 pluck, 1 stab, 2 lead, 3 FM keys
    if style == 2:
        notes = notes[: int(rng.integers(1, 3))]
        env = _env(n, sr, rng.uniform(0.05, 0.3), attack=rng.uniform(0.001, 0.004),
                   hold=rng.uniform(0.3, 0.8) * n / sr, power=2.0)  # fmt: skip
    else:
        decays = ((0.08, 0.45), (0.03, 0.15), (0.0, 0.0), (0.25, 1.0))[style]
        env = _env(n, sr, rng.uniform(*decays), attack=0.001, hold=rng.uniform(0.05, 0.3) if style == 1 else 0.0,
                   power=2.0 if style == 1 else 1.0)  # fmt: skip
    a = _active(env)
    t = np.arange(a) / sr
    per_channel = 1 if style == 3 else int(rng.integers(1, 3))
    cents = rng.uniform(3.0, 20.0)
    freqs = (_midi_hz(notes)[None, :, None] * 2.0 ** (rng.uniform(-cents, cents, (2, notes.size, per_channel))
                                                       / 1200.0)).reshape(2, -1, 1)  # fmt: skip
    if style == 2:  # delayed vibrato
        ramp = np.clip((t - 0.15) / 0.2, 0.0, 1.0)
        freqs = freqs * (1.0 + rng.uniform(0.002, 0.008) * _sin(rng.uniform(4.5, 6.5) * t) * ramp)
    cyc = _cycles(freqs, sr, a) + rng.random((2, freqs.shape[1], 1))
    if style == 3:
        index = rng.uniform(0.5, 3.0) * np.exp(-t / rng.uniform(0.05, 0.5))
        osc = _sin(cyc + index / _TAU * _sin(rng.choice([1.0, 2.0, 3.0, 4.0, 7.0]) * cyc))
    elif rng.random() < 0.6:
        osc = _saw(cyc, freqs / sr)
    else:
        osc = _pulse(cyc, freqs / sr, rng.uniform(0.2, 0.5))
    out = np.sum(osc, axis=1) / np.sqrt(freqs.shape[1])
    nyq = 0.45 * sr
    if style == 0:
        base, sweep, tau, q = _midi_hz(notes.min()) * 2, rng.uniform(1500.0, 8000.0), rng.uniform(0.02, 0.2), \
            rng.uniform(0.7, 3.0)  # fmt: skip
        out = _sweep(out, sr, lambda tt, f: _reslp(f, np.minimum(base + sweep * np.exp(-np.maximum(tt, 0) / tau),
                                                                   nyq), q))  # fmt: skip
    elif style in (1, 2):
        fc, q = min(rng.uniform(1500.0, 9000.0), nyq), rng.uniform(0.7, 2.0)
        out = _filter(out, sr, lambda f: _reslp(f, fc, q))
    out = _fit(_drive(out * env[:a], rng.uniform(0.0, 2.0)), n)
    if rng.random() < 0.35:
        out = _delay(out, sr, rng.uniform(0.08, 0.25), rng.uniform(0.25, 0.5))
    if rng.random() < 0.4:
        out += rng.uniform(0.1, 0.35) * _reverb(out, rng, sr, rng.uniform(0.3, 1.2))
    return out


# --- fx: sweeps, zaps, impacts, textures, glitches -------------------------------------------------------
def _riser(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    f_lo, f_hi, q = rng.uniform(150.0, 600.0), min(rng.uniform(3000.0, 12000.0), 0.45 * sr), rng.uniform(0.7, 3.0)
    up = rng.random() < 0.6  # else a down-lifter
    lo, hi = (f_lo, f_hi) if up else (f_hi, f_lo)

    def centre(t: np.ndarray) -> np.ndarray:
        return lo * (hi / lo) ** np.clip(t / dur, 0.0, 1.0)

    def band(tt: np.ndarray, f: np.ndarray) -> np.ndarray:  # the same power in every frame: `shape` sets level
        g = _bp(f, centre(tt), q)
        return g / np.sqrt(np.mean(g * g, axis=1, keepdims=True))

    out = _sweep(_white(rng, n, rng.uniform(0.0, 0.4)), sr, band)
    t = np.arange(n) / sr
    if rng.random() < 0.5:  # a pitched sweep riding on the noise
        tone = _sin(_cycles(centre(t) * rng.uniform(0.25, 0.6), sr, n))
        out += rng.uniform(0.3, 1.2) * _pan(tone, rng.uniform(-0.3, 0.3))
    shape = 0.3 + 0.7 * (t / dur) ** rng.uniform(1.0, 3.0) if up else np.exp(-t / (rng.uniform(0.2, 0.6) * dur))
    return out * shape


def _zap(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.04, 0.25))
    a = _active(env)
    t = np.arange(a) / sr
    f_lo, f_hi = rng.uniform(40.0, 300.0), min(rng.uniform(1500.0, 8000.0), 0.4 * sr)
    freq = f_lo + (f_hi - f_lo) * np.exp(-t / rng.uniform(0.01, 0.08))
    cyc = _cycles(freq, sr, a)
    zap = (_sin(cyc) if rng.random() < 0.5 else 0.6 * _pulse(cyc, freq / sr)) * env[:a]
    out, spacing, side = np.zeros((2, n)), rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.7)
    for k in range(int(rng.integers(1, 5))):  # echoes of the zap bouncing left and right
        s = int(k * spacing * sr)
        if s >= n:
            break
        out[:, s:] += _fit(_pan(zap * 0.7**k, side * (-1) ** k if k else 0.0), n - s)
    return _drive(out, rng.uniform(0.0, 3.0))


def _impact(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    env = _env(n, sr, rng.uniform(0.3, 1.2))
    a = _active(env)
    t = np.arange(a) / sr
    freq = rng.uniform(30.0, 60.0) * (1.0 + rng.uniform(0.5, 2.0) * np.exp(-t / rng.uniform(0.02, 0.1)))
    boom = _sin(_cycles(freq, sr, a)) * env[:a]
    lp = min(rng.uniform(1500.0, 6000.0), 0.45 * sr)
    burst_env = _env(a, sr, rng.uniform(0.05, 0.25))
    burst = _noise(rng, a, sr, lambda f: _lp(f, lp), rho=rng.uniform(0.2, 0.7)) * burst_env
    out = _fit(np.stack([boom, boom]) + rng.uniform(0.1, 0.3) * burst, n)
    return _drive(out + rng.uniform(0.3, 0.7) * _reverb(out, rng, sr, rng.uniform(0.6, 2.0)), rng.uniform(0.0, 2.0))


def _texture(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    fade = rng.uniform(0.3, 1.0) * n
    dust = np.zeros((2, n))
    for ch in range(2):  # sparse random impulses, independent per side, thinning out over time
        pos = np.concatenate([[0], rng.integers(0, n, rng.poisson(rng.uniform(20.0, 300.0) * n / sr))])
        dust[ch, pos] = rng.uniform(-1.0, 1.0, pos.size) * np.exp(-pos / fade)
        dust[ch, 0] = 1.0
    tau = rng.uniform(0.001, 0.01)
    g = np.arange(min(n, int(10 * tau * sr) + 1)) / sr
    f_hi = min(rng.uniform(800.0, 8000.0), 0.4 * sr)  # each grain a short falling chirp: droplets, crackle
    chirp = f_hi * rng.uniform(0.2, 0.9) + f_hi * rng.uniform(0.1, 0.8) * np.exp(-g / tau)
    grain = _sin(_cycles(chirp, sr, g.size)) * np.exp(-g / tau)
    lp = min(rng.uniform(800.0, 8000.0), 0.45 * sr)
    bed = _noise(rng, n, sr, lambda f: _lp(f, lp, 1), rho=rng.uniform(0.0, 0.3)) * np.exp(-np.arange(n) / fade)
    return _convolve(dust, grain[None]) + rng.uniform(0.02, 0.2) * bed


def _glitch(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    step = max(1, int(rng.uniform(0.015, 0.07) * sr))
    steps = -(-n // step)
    gates = rng.random(steps) < rng.uniform(0.4, 0.8)
    gates[0] = True
    freq = np.repeat(_midi_hz(rng.integers(40, 90, steps)), step)[:n]
    tone = _pulse(_cycles(freq, sr, n), freq / sr, rng.uniform(0.1, 0.5))
    levels = 2.0 ** rng.integers(3, 8)
    hold = int(rng.integers(2, 16))
    tone = np.repeat(np.round(tone[::hold] * levels) / levels, hold)[:n]  # bit-crush and sample-hold
    pans = np.repeat(rng.uniform(-0.8, 0.8, steps), step)[:n]
    amp = np.repeat(gates, step)[:n] * np.exp(-np.arange(n) / (rng.uniform(0.2, 0.8) * n))
    return _pan(tone * amp, 0.0) * np.stack([np.cos((pans + 1) * np.pi / 4), np.sin((pans + 1) * np.pi / 4)]) * 1.4


_FX: tuple[Voice, ...] = (_riser, _zap, _impact, _texture, _glitch)


def _fx(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _FX[int(rng.integers(len(_FX)))](rng, n, sr)


# --- public API -------------------------------------------------------------------------------------------
_VOICES: dict[str, Voice] = {
    "kick": _kick, "snare": _snare, "clap": _clap, "closed_hat": _closed_hat, "open_hat": _open_hat,
    "tom": _tom, "perc": _perc, "bass": _bass, "synth": _synth, "fx": _fx,
}  # fmt: skip


def category_index(category: str) -> int:
    """Position of a category name in CATEGORIES (the label a model is trained with)."""
    if not isinstance(category, str) or category not in _VOICES:
        raise ConfigError(f"unknown category {category!r}; choose one of: {', '.join(CATEGORIES)}")
    return CATEGORIES.index(category)


def _check_format(length: int, sample_rate: int) -> None:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < MIN_LENGTH:
        raise ConfigError(f"length must be an integer number of samples >= {MIN_LENGTH}, got {length!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not (
            MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):  # fmt: skip
        raise ConfigError(f"sample_rate must be an integer in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, "
                          f"got {sample_rate!r}")  # fmt: skip


def _finish(x: np.ndarray, rng: np.random.Generator, sr: int, category: str) -> np.ndarray:
    """Fade the last 50 ms (at most an eighth of the sound) to silence, then peak-normalise."""
    n = x.shape[-1]
    fade = max(1, min(n // 8, sr // 20))
    x[:, n - fade :] *= np.cos(np.linspace(0.0, np.pi / 2, fade)) ** 2
    peak = float(np.max(np.abs(x)))
    if not np.isfinite(peak) or peak < 1e-9:  # a bug in a voice, never bad input: say which voice
        raise RuntimeError(f"the {category!r} voice produced {'silence' if peak < 1e-9 else 'non-finite audio'}")
    level = 10.0 ** (rng.uniform(*PEAK_DBFS) / 20.0)
    return (x * (level / peak)).astype(np.float32)


def synthesize(category: str, rng: np.random.Generator, length: int, sample_rate: int = 44100) -> np.ndarray:
    """One stereo one-shot of a category as float32 [2, length], transient at sample 0, peak -6..-1 dBFS."""
    category_index(category)
    _check_format(length, sample_rate)
    return _finish(_VOICES[category](rng, int(length), int(sample_rate)), rng, int(sample_rate), category)


def _seed_rng(*parts: int) -> np.random.Generator:
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
            raise ConfigError(f"seeds and indices must be non-negative integers, got {p!r}")
    return np.random.default_rng(int(parts[0]) if len(parts) == 1 else [int(p) for p in parts])


def synth_batch(categories: Sequence[str], seeds: Sequence[int], length: int, sample_rate: int = 44100) -> np.ndarray:
    """float32 [B, 2, length]: item b is synthesize(categories[b], np.random.default_rng(seeds[b]), ...)."""
    if len(categories) != len(seeds):
        raise ConfigError(f"categories and seeds must have the same length, got {len(categories)} and {len(seeds)}")
    _check_format(length, sample_rate)
    out = np.empty((len(seeds), 2, int(length)), dtype=np.float32)
    for b, (category, seed) in enumerate(zip(categories, seeds, strict=True)):
        out[b] = synthesize(category, _seed_rng(seed), length, sample_rate)
    return out


def example(seed: int, index: int, length: int, sample_rate: int = 44100) -> tuple[np.ndarray, int]:
    """Item `index` of the endless corpus of `seed`: (float32 [2, length], label = index % len(CATEGORIES))."""
    rng = _seed_rng(seed, index)
    label = int(index) % len(CATEGORIES)
    return synthesize(CATEGORIES[label], rng, length, sample_rate), label


class SynthCorpus:
    """An endless, deterministic labelled corpus: corpus[i] is always the same sound for the same seed."""

    def __init__(self, seed: int = 0, length: int = 65536, sample_rate: int = 44100) -> None:
        _seed_rng(seed)
        _check_format(length, sample_rate)
        self.seed, self.length, self.sample_rate = int(seed), int(length), int(sample_rate)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return example(self.seed, index, self.length, self.sample_rate)

    def batch(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Items start .. start+count-1 as (float32 [count, 2, length], int64 labels [count])."""
        items = [self[i] for i in range(start, start + count)]
        audio = np.stack([x for x, _ in items]) if items else np.zeros((0, 2, self.length), np.float32)
        return audio, np.array([label for _, label in items], dtype=np.int64)


def write_corpus(folder: str | Path, per_category: int, length: int, sample_rate: int = 44100,
                 seed: int = 0) -> list[Path]:  # fmt: skip
    """Write `<folder>/<category>/<category>_<nnnn>.wav` (24-bit PCM); file j of a category is item
    j * len(CATEGORIES) + its label of SynthCorpus(seed), so the files and the endless corpus agree."""
    if isinstance(per_category, bool) or not isinstance(per_category, (int, np.integer)) or per_category < 1:
        raise ConfigError(f"per_category must be a positive integer, got {per_category!r}")
    _check_format(length, sample_rate)
    corpus = SynthCorpus(seed, length, sample_rate)
    paths: list[Path] = []
    for label, category in enumerate(CATEGORIES):
        (Path(folder) / category).mkdir(parents=True, exist_ok=True)
        for j in range(per_category):
            path = Path(folder) / category / f"{category}_{j:04d}.wav"
            sf.write(path, corpus[j * len(CATEGORIES) + label][0].T, sample_rate, subtype="PCM_24")
            paths.append(path)
    return paths

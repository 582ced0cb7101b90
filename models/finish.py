"""The last stage of every generated sound: no DC offset, no click at either end, nothing past full scale.

Waveform diffusion leaves a slowly drifting offset in its output (a few thousandths of full scale, most
of the energy below 5 Hz), and a small network gets the samples at the edges of its window wrong: a
burst in the final few dozen samples, and a spike in the first few. With the default model the first
four samples of 8-75% of the sounds (by category) peak at more than 1.5x the 2 ms after them, up to
1.8 times full scale; in its training data that ratio never exceeds 1.26. A producer would remove all of
it by hand; the companion does it before anything is written or played:

- the first :data:`GUARD_MS` are limited to :data:`GUARD_RATIO` times the peak of the
  :data:`GUARD_WINDOW_MS` after them (per item, across channels): the window-edge spike goes, a real
  attack stays (on the synthesizer's sounds it changes 1.7% of them, by less than 0.01);
- a zero-phase high-pass at :data:`DC_CUTOFF_HZ` (second order, applied in the frequency domain over a
  zero-padded copy, so nothing wraps around and the transient keeps its shape); -0.26 dB at 20 Hz, -0.05 dB at 30 Hz;
- for models trained on one-shots that end in a fade (``ModelConfig.fade_out_ms``), the same
  equal-power fade over the last milliseconds of the requested length;
- a sound that still goes past full scale is turned down as a whole until its peak sits at
  :data:`CEILING` (-0.1 dBFS) rather than clipped: its shape, transient and tone stay as generated.

NumPy only, item by item, so a seed still gives the same sound whatever the batch.
"""

from __future__ import annotations

import numpy as np

from models.errors import ConfigError

DC_CUTOFF_HZ = 10.0
MAX_FADE_MS = 1000.0
CEILING = 10 ** (-0.1 / 20)  # -0.1 dBFS: where a sound that went past full scale is turned down to
GUARD_MS, GUARD_WINDOW_MS, GUARD_RATIO = 0.2, 2.0, 1.25


def remove_dc(audio: np.ndarray, sample_rate: int, cutoff_hz: float = DC_CUTOFF_HZ) -> np.ndarray:
    """High-pass ``audio`` ``[..., samples]`` with the magnitude of a 2nd-order Butterworth at ``cutoff_hz``
    and no phase shift."""
    x = np.asarray(audio, dtype=np.float64)
    if not 0.0 < cutoff_hz < sample_rate / 2:
        raise ConfigError(f"cutoff_hz must be in (0, {sample_rate / 2}) Hz, got {cutoff_hz}")
    n = x.shape[-1]
    size = 1 << int(np.ceil(np.log2(2 * n)))  # room for the filter's tails: no circular wrap-around
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    ratio = cutoff_hz / np.maximum(freqs, 1e-9)
    gain = 1.0 / np.sqrt(1.0 + ratio**4)
    gain[0] = 0.0
    return np.fft.irfft(np.fft.rfft(x, size, axis=-1) * gain, size, axis=-1)[..., :n]


def fade_samples(sample_rate: int, fade_ms: float, length: int) -> int:
    """Samples in an end fade of ``fade_ms``, at most an eighth of the sound."""
    return min(int(round(fade_ms * sample_rate / 1000.0)), length // 8)


def fade_out(audio: np.ndarray, sample_rate: int, fade_ms: float) -> np.ndarray:
    """Equal-power (cos²) fade to silence over the last ``fade_ms`` of ``audio`` ``[..., samples]``."""
    if not 0.0 <= fade_ms <= MAX_FADE_MS:
        raise ConfigError(f"fade_ms must be in 0..{MAX_FADE_MS:g}, got {fade_ms}")
    x = np.array(audio, dtype=np.float64)
    n = fade_samples(sample_rate, fade_ms, x.shape[-1])
    if n > 0:
        gain = np.cos(np.linspace(0.0, np.pi / 2, n)) ** 2
        gain[-1] = 0.0  # cos(pi/2) is 6e-17, not zero
        x[..., -n:] *= gain
    return x


def _item_axes(x: np.ndarray) -> tuple[int, ...]:
    """The axes of one item: ``[channels, samples]`` (also inside a batch), or ``[samples]``."""
    return (-2, -1) if x.ndim >= 2 else (-1,)


def guard_start(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Limit the first :data:`GUARD_MS` of each item to :data:`GUARD_RATIO` times the peak of the
    :data:`GUARD_WINDOW_MS` after them; sounds too short to have both are returned unchanged."""
    x = np.array(audio, dtype=np.float64)
    n = max(1, int(round(GUARD_MS * sample_rate / 1000.0)))
    window = max(1, int(round(GUARD_WINDOW_MS * sample_rate / 1000.0)))
    if x.shape[-1] < n + window:
        return x
    ref = GUARD_RATIO * np.max(np.abs(x[..., n:n + window]), axis=_item_axes(x), keepdims=True)
    x[..., :n] = np.clip(x[..., :n], -ref, ref)
    return x


def fit_full_scale(audio: np.ndarray) -> np.ndarray:
    """Each item (``[channels, samples]``, or ``[samples]``) that peaks past full scale, turned down as a
    whole to peak at :data:`CEILING`; items within full scale are returned unchanged."""
    x = np.array(audio, dtype=np.float64)
    peak = np.max(np.abs(x), axis=_item_axes(x), keepdims=True) if x.size else np.zeros(())
    return x * np.where(peak > 1.0, CEILING / np.maximum(peak, 1e-30), 1.0)


def finish(audio: np.ndarray, sample_rate: int, fade_ms: float = 0.0) -> np.ndarray:
    """The start guard, DC removal, the model's end fade, then no peak past full scale: float32, same shape."""
    x = remove_dc(guard_start(audio, sample_rate), sample_rate)
    if fade_ms > 0:
        x = fade_out(x, sample_rate, fade_ms)
    return np.clip(fit_full_scale(x), -1.0, 1.0).astype(np.float32)  # the clip only guards float rounding

"""The last stage of every generated sound: no DC offset, no click at the end, nothing past full scale.

Waveform diffusion leaves a slowly drifting offset in its output (a few thousandths of full scale, most
of the energy below 5 Hz), and a small network gets the last samples of its window wrong (a burst in the
final few dozen samples). A producer would remove both by hand; the companion does it before anything
is written or played:

- a zero-phase high-pass at :data:`DC_CUTOFF_HZ` (second order, applied in the frequency domain over a
  zero-padded copy, so nothing wraps around and the transient keeps its shape); -0.26 dB at 20 Hz, -0.05 dB at 30 Hz;
- for models trained on one-shots that end in a fade (``ModelConfig.fade_out_ms``), the same
  equal-power fade over the last milliseconds of the requested length;
- a clip to [-1, 1], the range every WAV writer accepts.

NumPy only, item by item, so a seed still gives the same sound whatever the batch.
"""

from __future__ import annotations

import numpy as np

from models.errors import ConfigError

DC_CUTOFF_HZ = 10.0
MAX_FADE_MS = 1000.0


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


def finish(audio: np.ndarray, sample_rate: int, fade_ms: float = 0.0) -> np.ndarray:
    """DC removal, the model's end fade, then a clip to [-1, 1]: float32, same shape."""
    x = remove_dc(audio, sample_rate)
    if fade_ms > 0:
        x = fade_out(x, sample_rate, fade_ms)
    return np.clip(x, -1.0, 1.0).astype(np.float32)

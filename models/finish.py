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
- the band limits, when the model has them for the sound's category (``ModelConfig.low_cut_hz`` and
  ``high_cut_hz``) and the caller leaves them on: the same high-pass moved up, and a low-pass, to where the
  category's training sounds have (almost) nothing (:func:`low_cut_of`, :func:`high_cut_of`). A small
  network spreads its error evenly over the spectrum, which under a hi-hat or a clap is a rumble 13-23 dB
  louder than anything in its training data below 150 Hz, and over a bass a hiss 30 dB louder above 8 kHz;
  a producer would filter both away, and the companion does it for them;
- the tail gate, when the model recommends it (``ModelConfig.tail_gate_db``) or the caller asks for it: a
  downward expander that pushes whatever lies more than the threshold below the sound's loudest 10 ms
  further down. A small network leaves a floor of hiss and rumble where its sound should have died away
  (the default model: 45-70 dB under the peak in the tails of kicks, hats and percussion, whose training
  sounds end in digital silence); the gate removes it and leaves the body of the sound untouched;
- the onset fade, when the model has one for the sound's category (``ModelConfig.fade_in_ms``): a sin² fade
  in over the first fraction of a millisecond, as long as the category's training sounds take at the least to
  reach half their peak (:func:`fade_in_of`). The network starts every sound at full tilt, a step from
  silence that clicks when the sample is played; where the data never does that (the synthesizer's synths
  rise from 0 over at least 0.4 ms; its drums may start at their peak, and get no fade), neither does the
  sound;
- for models trained on one-shots that end in a fade (``ModelConfig.fade_out_ms``), the same
  equal-power fade over the last milliseconds of the requested length;
- a sound that still goes past full scale is turned down as a whole until its peak sits at
  :data:`CEILING` (-0.1 dBFS) rather than clipped: its shape, transient and tone stay as generated.

NumPy only, item by item, so a seed still gives the same sound whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.errors import ConfigError

DC_CUTOFF_HZ = 10.0
MAX_FADE_MS = 1000.0
CEILING = 10 ** (-0.1 / 20)  # -0.1 dBFS: where a sound that went past full scale is turned down to
GUARD_MS, GUARD_WINDOW_MS, GUARD_RATIO = 0.2, 2.0, 1.25
TAIL_GATE_RANGE = (-120.0, -10.0)  # thresholds in dB under the loudest 10 ms; 0 turns the gate off
GATE_RATIO = 4.0  # 1 dB under the threshold becomes 4 dB under it
GATE_WINDOW_MS, GATE_HOP_MS, GATE_RELEASE_MS, GATE_RANGE_DB = 10.0, 1.0, 50.0, 90.0
# A category's band limits: the low cut is the frequency under which all but LOW_CUT_PERCENTILE % of its training
# sounds hold less than LOW_CUT_SHARE_DB of their energy (-30 dB: 0.1%; under DC_CUTOFF_HZ it is 0, the DC filter is
# enough); the high cut the frequency above which all but 100 - HIGH_CUT_PERCENTILE % hold less than
# HIGH_CUT_SHARE_DB (-40 dB: 0.01%; 0 when that is near Nyquist, over HIGH_CUT_NYQUIST of the sample rate).
# Each rule is the most aggressive of those measured that leaves the synthesizer's own sounds alone (docs/generate.md, docs/default-model.md)
LOW_CUT_SHARE_DB, LOW_CUT_PERCENTILE, LOW_CUT_MAX_HZ = -30.0, 5.0, 5000.0
HIGH_CUT_SHARE_DB, HIGH_CUT_PERCENTILE, HIGH_CUT_MIN_HZ, HIGH_CUT_MAX_HZ = -40.0, 99.0, 500.0, 96000.0
HIGH_CUT_NYQUIST = 0.45
# A category's onset fade: all but FADE_IN_PERCENTILE % of its training sounds take at least this long to first
# reach FADE_IN_LEVEL of their peak; under FADE_IN_MIN_MS it is 0 (sounds that may start at their peak: drums)
FADE_IN_LEVEL, FADE_IN_PERCENTILE, FADE_IN_MIN_MS, FADE_IN_MAX_MS = 0.5, 5.0, 0.1, 100.0


def check_tail_gate(value: object) -> float:
    """A tail-gate threshold: 0 (off) or a number of dB in TAIL_GATE_RANGE."""
    low, high = TAIL_GATE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            float(value) == 0.0 or low <= float(value) <= high):  # fmt: skip
        raise ConfigError(f"tail_gate_db must be 0 (off) or a number of dB in {low:g}..{high:g} under the sound's "
                          f"loudest 10 ms, got {value!r}")
    return float(value)


def _check_per_category(value: object, what: str, low: float, high: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            float(value) == 0.0 or low <= float(value) <= high):  # fmt: skip
        raise ConfigError(f"{what} must be 0 (none) or a number of {unit} in {low:g}..{high:g}, got {value!r}")
    return float(value)


def check_low_cut(value: object) -> float:
    """A low-cut corner: 0 (none) or a number of Hz in DC_CUTOFF_HZ..LOW_CUT_MAX_HZ."""
    return _check_per_category(value, "a low cut", DC_CUTOFF_HZ, LOW_CUT_MAX_HZ, "Hz")


def check_high_cut(value: object) -> float:
    """A high-cut corner: 0 (none) or a number of Hz in HIGH_CUT_MIN_HZ..HIGH_CUT_MAX_HZ."""
    return _check_per_category(value, "a high cut", HIGH_CUT_MIN_HZ, HIGH_CUT_MAX_HZ, "Hz")


def check_fade_in(value: object) -> float:
    """An onset fade: 0 (none) or a number of milliseconds in FADE_IN_MIN_MS..FADE_IN_MAX_MS."""
    return _check_per_category(value, "an onset fade", FADE_IN_MIN_MS, FADE_IN_MAX_MS, "milliseconds")


def per_category(categories: Sequence[str], values: Sequence[float], category: str | None) -> float:
    """``category``'s entry in a per-category setting of a model (0: none, also for None, for a category the
    model lacks, and for models without the setting)."""
    if not values or category is None or category not in categories:
        return 0.0
    return float(values[list(categories).index(category)])


def band_of(categories: Sequence[str], low_cut_hz: Sequence[float], high_cut_hz: Sequence[float],
            category: str | None) -> tuple[float, float]:
    """``category``'s (low cut, high cut) in Hz from a model's per-category corners (0: none, also for None, for a
    category the model lacks, and for models without corners)."""
    return per_category(categories, low_cut_hz, category), per_category(categories, high_cut_hz, category)


def _high_pass_gain(freqs: np.ndarray, corner_hz: float) -> np.ndarray:
    """The magnitude of a 2nd-order Butterworth high-pass at ``corner_hz`` at each of ``freqs`` (0 at 0 Hz)."""
    gain = 1.0 / np.sqrt(1.0 + (corner_hz / np.maximum(freqs, 1e-9)) ** 4)
    return np.where(freqs > 0.0, gain, 0.0)


def _crossings(sounds: Sequence[np.ndarray], sample_rate: int, share: float) -> list[float]:
    """Per sound with any energy, the frequency where its cumulative spectrum (channels summed) reaches
    ``share`` of the total. The spectrum is weighted by the finish stage's DC filter first (the magnitude of
    :func:`remove_dc`, which every generated sound goes through): an offset under an envelope (a pulse wave's,
    say) is not low end the network has to make, and would otherwise keep a category's low cut at 0."""
    found = []
    for sound in sounds:
        x = np.asarray(sound, dtype=np.float64)
        mid = x.reshape(-1, x.shape[-1]).mean(axis=0)
        freqs = np.fft.rfftfreq(len(mid), 1.0 / sample_rate)
        power = (np.abs(np.fft.rfft(mid)) * _high_pass_gain(freqs, DC_CUTOFF_HZ)) ** 2
        total = power.sum()
        if not np.isfinite(total) or total <= 0.0:
            continue
        found.append(freqs[min(int(np.searchsorted(np.cumsum(power) / total, share)), len(freqs) - 1)])
    return found


def low_cut_of(sounds: Sequence[np.ndarray], sample_rate: int) -> float:
    """The low cut of a set of sounds (each ``[channels, samples]`` or ``[samples]``): the frequency under which
    all but :data:`LOW_CUT_PERCENTILE` % of them hold less than :data:`LOW_CUT_SHARE_DB` of their energy
    (channels summed), in whole Hz, capped at :data:`LOW_CUT_MAX_HZ`; 0 when that is under
    :data:`DC_CUTOFF_HZ` or no sound has any energy."""
    found = _crossings(sounds, sample_rate, 10.0 ** (LOW_CUT_SHARE_DB / 10.0))
    if not found:
        return 0.0
    corner = float(np.round(min(np.percentile(found, LOW_CUT_PERCENTILE), LOW_CUT_MAX_HZ)))
    return corner if corner >= DC_CUTOFF_HZ else 0.0


def high_cut_of(sounds: Sequence[np.ndarray], sample_rate: int) -> float:
    """The high cut of a set of sounds: the frequency above which all but ``100 -`` :data:`HIGH_CUT_PERCENTILE` %
    of them hold less than :data:`HIGH_CUT_SHARE_DB` of their energy, in whole Hz; 0 when that lies over
    :data:`HIGH_CUT_NYQUIST` of the sample rate (nothing worth cutting) or no sound has any energy."""
    found = _crossings(sounds, sample_rate, 1.0 - 10.0 ** (HIGH_CUT_SHARE_DB / 10.0))
    if not found:
        return 0.0
    corner = float(np.round(max(np.percentile(found, HIGH_CUT_PERCENTILE), HIGH_CUT_MIN_HZ)))
    return corner if corner < HIGH_CUT_NYQUIST * sample_rate else 0.0


def fade_in_of(sounds: Sequence[np.ndarray], sample_rate: int) -> float:
    """The onset fade of a set of sounds (each ``[channels, samples]`` or ``[samples]``): the time in which all but
    :data:`FADE_IN_PERCENTILE` % of them have not yet reached :data:`FADE_IN_LEVEL` of their peak (the louder
    channel), in ms rounded to 0.01; 0 when that is under :data:`FADE_IN_MIN_MS` or no sound has any signal."""
    found = []
    for sound in sounds:
        x = np.abs(np.asarray(sound, dtype=np.float64))
        level = x.reshape(-1, x.shape[-1]).max(axis=0)
        peak = float(level.max()) if level.size else 0.0
        if np.isfinite(peak) and peak > 0.0:
            found.append(int(np.argmax(level >= FADE_IN_LEVEL * peak)))
    if not found:
        return 0.0
    ms = round(min(float(np.percentile(found, FADE_IN_PERCENTILE)) * 1000.0 / sample_rate, FADE_IN_MAX_MS), 2)
    return ms if ms >= FADE_IN_MIN_MS else 0.0


def fade_in(audio: np.ndarray, sample_rate: int, fade_ms: float) -> np.ndarray:
    """A sin² fade from silence over the first ``fade_ms`` of ``audio`` ``[..., samples]`` (at most an eighth of
    it); 0: none."""
    x = np.array(audio, dtype=np.float64)
    n = fade_samples(sample_rate, check_fade_in(fade_ms), x.shape[-1])
    if n > 0:
        x[..., :n] *= np.sin(np.linspace(0.0, np.pi / 2, n, endpoint=False)) ** 2
    return x


def band_filter(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float = 0.0) -> np.ndarray:
    """``audio`` ``[..., samples]`` through the magnitudes of a 2nd-order Butterworth high-pass at ``low_hz`` and,
    unless ``high_hz`` is 0, a 2nd-order Butterworth low-pass at ``high_hz``, with no phase shift (applied in the
    frequency domain over a zero-padded copy: nothing wraps around)."""
    x = np.asarray(audio, dtype=np.float64)
    for name, hz in (("low_hz", low_hz), ("high_hz", high_hz or low_hz)):
        if not 0.0 < hz < sample_rate / 2:
            raise ConfigError(f"{name} must be in (0, {sample_rate / 2}) Hz, got {hz}")
    n = x.shape[-1]
    size = 1 << int(np.ceil(np.log2(2 * n)))  # room for the filter's tails: no circular wrap-around
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    gain = _high_pass_gain(freqs, low_hz)
    if high_hz:
        gain = gain / np.sqrt(1.0 + (freqs / high_hz) ** 4)
    return np.fft.irfft(np.fft.rfft(x, size, axis=-1) * gain, size, axis=-1)[..., :n]


def remove_dc(audio: np.ndarray, sample_rate: int, cutoff_hz: float = DC_CUTOFF_HZ) -> np.ndarray:
    """High-pass ``audio`` ``[..., samples]`` with the magnitude of a 2nd-order Butterworth at ``cutoff_hz``
    and no phase shift (:func:`band_filter` without the low-pass)."""
    return band_filter(audio, sample_rate, cutoff_hz)


def fade_samples(sample_rate: int, fade_ms: float, length: int) -> int:
    """Samples in a fade of ``fade_ms``, at most an eighth of the sound."""
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


def _envelope_db(x: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """Centred 10 ms RMS of the louder channel, every ``hop`` samples, in dB under its loudest value:
    ``[..., frames]`` for ``x`` ``[..., channels, samples]`` (silent items: all zeros)."""
    power = np.max(x * x, axis=-2)
    window = max(1, int(round(GATE_WINDOW_MS * sample_rate / 1000.0)))
    padded = np.pad(power, [(0, 0)] * (power.ndim - 1) + [(window // 2, window - window // 2)])
    total = np.cumsum(padded, axis=-1)
    centres = np.arange(0, power.shape[-1], hop)
    mean = (total[..., centres + window] - total[..., centres]) / window
    loudest = np.max(mean, axis=-1, keepdims=True)
    level = 10.0 * np.log10(np.maximum(mean, 1e-30) / np.maximum(loudest, 1e-30))
    return np.where(loudest > 0.0, level, 0.0)


def gate_tail(audio: np.ndarray, sample_rate: int, threshold_db: float) -> np.ndarray:
    """A downward expander (ratio :data:`GATE_RATIO`, at most :data:`GATE_RANGE_DB` of cut) on ``audio``
    ``[..., channels, samples]``, each item against its own loudest 10 ms: where the envelope is ``d`` dB
    under ``threshold_db`` the sound is turned down by ``(GATE_RATIO - 1) * d`` dB. The gain opens at once
    (the centred window opens it about 5 ms before an onset) and closes no faster than a
    :data:`GATE_RELEASE_MS` release, so a decay is steepened, never chopped. 0 returns the audio unchanged."""
    threshold_db = check_tail_gate(threshold_db)
    x = np.array(audio, dtype=np.float64)
    if x.ndim == 1:
        return gate_tail(x[None], sample_rate, threshold_db)[0]
    if threshold_db == 0.0 or x.shape[-1] == 0:
        return x
    hop = max(1, int(round(GATE_HOP_MS * sample_rate / 1000.0)))
    level = _envelope_db(x, sample_rate, hop)
    target = np.maximum((GATE_RATIO - 1.0) * np.minimum(level - threshold_db, 0.0), -GATE_RANGE_DB)
    keep = np.exp(-hop / (GATE_RELEASE_MS * sample_rate / 1000.0))  # one-pole release, per hop
    gain_db = np.empty_like(target)
    current = np.zeros(target.shape[:-1])
    for k in range(target.shape[-1]):
        step = target[..., k]
        current = np.where(step >= current, step, keep * current + (1.0 - keep) * step)
        gain_db[..., k] = current
    positions = np.arange(x.shape[-1])
    frames = np.arange(0, x.shape[-1], hop)
    flat = gain_db.reshape(-1, gain_db.shape[-1])
    gain = np.stack([np.interp(positions, frames, g) for g in flat]).reshape(gain_db.shape[:-1] + (x.shape[-1],))
    return x * (10.0 ** (gain / 20.0))[..., None, :]


def finish(audio: np.ndarray, sample_rate: int, fade_ms: float = 0.0, tail_gate_db: float = 0.0,
           low_cut_hz: float = 0.0, high_cut_hz: float = 0.0, fade_in_ms: float = 0.0) -> np.ndarray:
    """The start guard, DC removal (with the high-pass at ``low_cut_hz`` instead when that is higher; 0: none)
    and the low-pass at ``high_cut_hz`` (0, or over :data:`HIGH_CUT_NYQUIST` of the rate: none), the tail gate
    (0: none), the onset fade ``fade_in_ms`` (0: none), the model's end fade, then no peak past full scale:
    float32, same shape."""
    low = min(max(DC_CUTOFF_HZ, check_low_cut(low_cut_hz)), HIGH_CUT_NYQUIST * sample_rate)
    high = check_high_cut(high_cut_hz)
    high = high if 0.0 < high < HIGH_CUT_NYQUIST * sample_rate else 0.0
    fade_in_ms = check_fade_in(fade_in_ms)
    x = band_filter(guard_start(audio, sample_rate), sample_rate, low, high)
    if tail_gate_db:
        x = gate_tail(x, sample_rate, tail_gate_db)
    if fade_in_ms:
        x = fade_in(x, sample_rate, fade_in_ms)
    if fade_ms > 0:
        x = fade_out(x, sample_rate, fade_ms)
    return np.clip(fit_full_scale(x), -1.0, 1.0).astype(np.float32)  # the clip only guards float rounding

"""A fixed, training-free audio embedding for the quality benchmark, and the statistics built on it.

`embed` turns a one-shot into a vector: the mean and spread over time of a log-mel spectrogram (own mel
filterbank, STFT via numpy.fft), the same spectrogram pooled coarsely in frequency and in log-spaced
time segments (attack, body, tail), and a few descriptors of brightness, noisiness, envelope and stereo
image. On sets of such vectors: `frechet_distance` (Gaussian Fréchet distance, as in FID/FAD),
`mean_pairwise_distance` (diversity), and two small classifiers with feature standardisation that
check whether generated sounds land in the category they were asked for. NumPy only.

Vectors are comparable only between sounds of the same sample rate and length: the time statistics
include the silence at the end of a short sound, which is part of what makes it sound short.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from models.errors import ConfigError

N_MELS = 64
DESCRIPTORS: tuple[str, ...] = (
    "centroid_log2hz", "centroid_spread", "rolloff_log2hz", "flatness", "zcr_log2hz", "loudness",
    "attack_s", "decay20_s", "decay40_s", "temporal_centroid_s", "crest", "width", "low_ratio", "high_ratio",
)  # fmt: skip
COARSE_BANDS = 8  # the log-mel spectrogram pooled into 8 bands x 6 time segments: the sound's shape in time
SEGMENT_EDGES_S = (0.0, 0.025, 0.06, 0.13, 0.27, 0.55, np.inf)
EMBED_DIM = 2 * N_MELS + COARSE_BANDS * (len(SEGMENT_EDGES_S) - 1) + len(DESCRIPTORS)
_FLOOR = 1e-10  # -100 dB power floor of the log-mel spectrogram


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not (
            4000 <= sample_rate <= 192000):  # fmt: skip
        raise ConfigError(f"sample_rate must be an integer in 4000..192000 Hz, got {sample_rate!r}")
    return int(sample_rate)


def _frame_size(sample_rate: int) -> int:
    """Power of two nearest to 23 ms (1024 at 44.1 and 48 kHz)."""
    return 1 << int(round(np.log2(0.0232 * sample_rate)))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS, fmin: float = 20.0,
                   fmax: float | None = None) -> np.ndarray:  # fmt: skip
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1], each normalised to unit area so that a band's
    value is a power density; a band narrower than one FFT bin takes its nearest bin instead of nothing."""
    sample_rate = _check_rate(sample_rate)
    top = sample_rate / 2 if fmax is None else float(fmax)
    if not 0.0 <= fmin < top <= sample_rate / 2:
        raise ConfigError(f"need 0 <= fmin < fmax <= sample_rate/2 = {sample_rate / 2}, got fmin={fmin}, fmax={top}")
    if n_mels < 1 or n_fft < 2:
        raise ConfigError(f"n_mels must be >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
    mel = np.linspace(2595.0 * np.log10(1.0 + fmin / 700.0), 2595.0 * np.log10(1.0 + top / 700.0), n_mels + 2)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.maximum(0.0, np.minimum((freqs - left) / (centre - left), (right - freqs) / (right - centre)))
    for band in np.flatnonzero(bank.sum(axis=1) == 0.0):
        bank[band, np.argmin(np.abs(freqs - edges[band + 1]))] = 1.0
    return bank / bank.sum(axis=1, keepdims=True)


@lru_cache(maxsize=8)
def _default_bank(sample_rate: int, n_fft: int) -> np.ndarray:
    bank = mel_filterbank(sample_rate, n_fft)
    bank.flags.writeable = False
    return bank


def _power_frames(mono: np.ndarray, n_fft: int) -> np.ndarray:
    """Centred Hann STFT power [frames, n_fft // 2 + 1] at hop n_fft / 4, scaled so a full-scale sine peaks
    near 1 in its bin."""
    hop = n_fft // 4
    padded = np.pad(mono, (n_fft // 2, n_fft // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2 * (4.0 / win.sum() ** 2)


def _as_channels(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] < 16:
        raise ConfigError(f"a sound must be [samples] or [channels, samples] with >= 16 samples, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("audio contains NaN or infinite samples")
    return x


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """log10 mel power [N_MELS, frames] of the mono mix, floored at -100 dB."""
    x = _as_channels(audio)
    n_fft = _frame_size(_check_rate(sample_rate))
    power = _power_frames(x.mean(axis=0), n_fft)
    return np.log10(power @ _default_bank(int(sample_rate), n_fft).T + _FLOOR).T


def spectral_centroid(audio: np.ndarray, sample_rate: int) -> float:
    """Magnitude-weighted mean frequency (Hz) of the whole sound's mono mix: low for kicks, high for hats."""
    mono = _as_channels(audio).mean(axis=0)
    mag = np.abs(np.fft.rfft(mono))
    freqs = np.fft.rfftfreq(mono.size, 1.0 / _check_rate(sample_rate))
    return float(np.sum(freqs * mag) / max(float(np.sum(mag)), 1e-20))


def _time_to(level: np.ndarray, start: int, below: float) -> int:
    """Frames from `start` until the level (dB re peak) stays below `below` for good."""
    above = np.flatnonzero(level[start:] >= below)
    return int(above[-1]) + 1 if above.size else 0


def _embed_one(x: np.ndarray, power: np.ndarray, mel: np.ndarray, sr: int) -> np.ndarray:
    """Features of one sound [channels, samples] from its STFT power and mel power [frames, N_MELS]."""
    n_fft = _frame_size(sr)
    hop = n_fft // 4
    mono = x.mean(axis=0)
    logmel = np.log10(mel + _FLOOR)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    energy = power.sum(axis=1) + _FLOOR
    weight = energy / energy.sum()
    per_frame = np.sum(power * freqs, axis=1) / energy
    centroid = float(weight @ per_frame)
    spread = float(np.sqrt(weight @ (np.log2(per_frame + 1.0) - np.log2(centroid + 1.0)) ** 2))
    spectrum = power.sum(axis=0) + _FLOOR
    cumulative = np.cumsum(spectrum) / spectrum.sum()
    rolloff = float(freqs[min(int(np.searchsorted(cumulative, 0.85)), freqs.size - 1)])
    flatness = float(np.mean(np.log10(spectrum)) - np.log10(np.mean(spectrum)))
    amp = np.abs(mono)
    crossings = np.abs(np.diff(np.signbit(mono).astype(np.int8)))
    zcr = float(np.sum(crossings * amp[1:]) / max(float(amp[1:].sum()), 1e-20)) * sr / 2  # loudness-weighted
    level = 10.0 * np.log10(energy / energy.max())
    peak = int(np.argmax(energy))
    times = np.arange(energy.size) * hop / sr
    mid, side = (x[0] + x[-1]) / 2, (x[0] - x[-1]) / 2
    total = float(np.sum(mid * mid) + np.sum(side * side)) + 1e-20
    descriptors = [
        np.log2(centroid + 1.0), spread, np.log2(rolloff + 1.0), flatness, np.log2(zcr + 1.0),
        np.log10(float(np.mean(mono * mono)) + _FLOOR), peak * hop / sr, _time_to(level, peak, -20.0) * hop / sr,
        _time_to(level, peak, -40.0) * hop / sr, float(weight @ times),
        np.log10(float(amp.max()) / np.sqrt(float(np.mean(mono * mono)) + _FLOOR) + 1e-12),
        float(np.sum(side * side)) / total, float(spectrum[freqs < 150.0].sum() / spectrum.sum()),
        float(spectrum[freqs > 5000.0].sum() / spectrum.sum()),
    ]  # fmt: skip
    coarse = np.full((len(SEGMENT_EDGES_S) - 1, COARSE_BANDS), np.log10(_FLOOR))
    bands = mel.reshape(len(mel), COARSE_BANDS, -1).sum(axis=2)
    for k, (start, stop) in enumerate(zip(SEGMENT_EDGES_S[:-1], SEGMENT_EDGES_S[1:], strict=True)):
        inside = (times >= start) & (times < stop)
        if inside.any():  # segments past the end of a short sound stay at the floor
            coarse[k] = np.log10(bands[inside].mean(axis=0) + _FLOOR)
    return np.concatenate([logmel.mean(axis=0), logmel.std(axis=0), coarse.ravel(),
                           np.asarray(descriptors, dtype=np.float64)])  # fmt: skip


def embed(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Feature vector [EMBED_DIM] of one sound ([samples] or [channels, samples]), or [B, EMBED_DIM] of a
    batch [B, channels, samples]. Layout: N_MELS band means, N_MELS band stds, the coarse spectrogram
    (time segments x COARSE_BANDS, row-major), then DESCRIPTORS."""
    sr = _check_rate(sample_rate)
    x = np.asarray(audio)
    if x.ndim not in (1, 2, 3):
        raise ConfigError(f"audio must be [samples], [channels, samples] or [batch, channels, samples], got {x.shape}")
    items = [_as_channels(item) for item in x] if x.ndim == 3 else [_as_channels(x)]
    if not items:
        return np.zeros((0, EMBED_DIM))
    n_fft = _frame_size(sr)
    powers = [_power_frames(item.mean(axis=0), n_fft) for item in items]
    # one matrix product for the whole batch: many small BLAS calls are slow on a busy machine
    mels = np.split(np.concatenate(powers) @ _default_bank(sr, n_fft).T, np.cumsum([len(p) for p in powers])[:-1])
    feats = np.stack([_embed_one(item, p, m, sr) for item, p, m in zip(items, powers, mels, strict=True)])
    return feats if x.ndim == 3 else feats[0]


def _feature_set(feats: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < min_rows:
        raise ConfigError(f"{name} must be [count >= {min_rows}, dim], got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ConfigError(f"{name} contains NaN or infinite values")
    return f


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (stable: negative
    round-off eigenvalues are clipped to zero)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [count, dim]:
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)."""
    a, b = _feature_set(feats_a, "feats_a"), _feature_set(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature sets must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(((root_a @ cov_b @ root_a) + (root_a @ cov_b @ root_a).T) / 2)
    diff = a.mean(axis=0) - b.mean(axis=0)
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    return max(float(value), 0.0)


def mean_pairwise_distance(feats: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows: how varied a set of sounds is."""
    f = _feature_set(feats, "feats")
    sq = np.sum(f * f, axis=1)
    dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * (f @ f.T), 0.0, None))
    return float(dist[np.triu_indices(len(f), k=1)].mean())


class _Standardised:
    """Shared fit/predict plumbing: label bookkeeping and z-scoring with the training set's statistics."""

    def _prepare(self, feats: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = _feature_set(feats, "feats", min_rows=1)
        y = np.asarray(labels)
        if y.shape != (len(f),):
            raise ConfigError(f"labels must be one per row of feats ({len(f)}), got shape {y.shape}")
        self.classes_, index = np.unique(y, return_inverse=True)
        self.mean_, self.scale_ = f.mean(axis=0), f.std(axis=0) + 1e-8
        return (f - self.mean_) / self.scale_, index

    def _z(self, feats: np.ndarray) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise ConfigError("the classifier must be fit() before predict()")
        f = _feature_set(feats, "feats", min_rows=1)
        if f.shape[1] != self.mean_.size:
            raise ConfigError(f"feats must have dimension {self.mean_.size} (as in fit), got {f.shape[1]}")
        return (f - self.mean_) / self.scale_

    def score(self, feats: np.ndarray, labels: np.ndarray) -> float:
        """Accuracy of predict(feats) against labels."""
        return float(np.mean(self.predict(feats) == np.asarray(labels)))

    def predict(self, feats: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class CentroidClassifier(_Standardised):
    """Nearest class mean in standardised feature space."""

    def fit(self, feats: np.ndarray, labels: np.ndarray) -> CentroidClassifier:
        z, index = self._prepare(feats, labels)
        self.centroids_ = np.stack([z[index == k].mean(axis=0) for k in range(len(self.classes_))])
        return self

    def predict(self, feats: np.ndarray) -> np.ndarray:
        z = self._z(feats)
        d = np.sum(z * z, axis=1)[:, None] - 2.0 * z @ self.centroids_.T + np.sum(self.centroids_**2, axis=1)
        best = np.argmin(d, axis=1)
        return self.classes_[best]


class LogisticClassifier(_Standardised):
    """Multinomial logistic regression on standardised features with an L2 penalty, fitted by full-batch
    Nesterov gradient descent. The step is 1/L for the gradient's Lipschitz constant L (the softmax
    Hessian is at most half the feature covariance), so it converges without a learning rate to tune."""

    def __init__(self, l2: float = 1e-3, steps: int = 500) -> None:
        if l2 < 0 or steps < 1:
            raise ConfigError(f"need l2 >= 0 and steps >= 1, got l2={l2}, steps={steps}")
        self.l2, self.steps = float(l2), int(steps)

    def fit(self, feats: np.ndarray, labels: np.ndarray) -> LogisticClassifier:
        z, index = self._prepare(feats, labels)
        k = len(self.classes_)
        target = np.eye(k)[index]
        w, velocity = np.zeros((z.shape[1] + 1, k)), np.zeros((z.shape[1] + 1, k))
        zb = np.hstack([z, np.ones((len(z), 1))])
        step = 1.0 / (0.5 * np.linalg.norm(zb, 2) ** 2 / len(z) + self.l2)
        for _ in range(self.steps):
            ahead = w + 0.9 * velocity
            grad = zb.T @ (self._softmax(zb @ ahead) - target) / len(z) + self.l2 * ahead
            velocity = 0.9 * velocity - step * grad
            w = w + velocity
        self.weights_ = w
        return self

    @staticmethod
    def _softmax(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        """Class probabilities [count, classes], columns in the order of classes_."""
        z = self._z(feats)
        return self._softmax(np.hstack([z, np.ones((len(z), 1))]) @ self.weights_)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        best = np.argmax(self.predict_proba(feats), axis=1)
        return self.classes_[best]

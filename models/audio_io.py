"""Reading audio files into model-ready arrays: channels fixed, rate converted with soxr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from models.errors import DDError

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")


class AudioFileError(DDError):
    """An audio file is missing, unreadable or empty."""

    code = "bad_audio"


def load_audio(path: str | Path, sample_rate: int, channels: int = 2) -> np.ndarray:
    """Read ``path`` as float32 ``[channels, n]`` at ``sample_rate`` (mono is duplicated, extra channels dropped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AudioFileError(f"audio file '{path}' does not exist")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise AudioFileError(
            f"cannot read '{path.name}' as audio ({exc}); readable formats: {', '.join(AUDIO_SUFFIXES)}"
        ) from None
    if data.shape[0] == 0:
        raise AudioFileError(f"audio file '{path.name}' holds no samples")
    audio = to_channels(data.T, channels)
    return resample(audio, rate, sample_rate)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Duplicate mono or truncate to ``channels`` (Dance Diffusion's own stereo rule)."""
    if audio.shape[0] == channels:
        return np.ascontiguousarray(audio, dtype=np.float32)
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0).astype(np.float32)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True).astype(np.float32)
    return np.ascontiguousarray(audio[:channels], dtype=np.float32)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Very-high-quality soxr resampling of ``[channels, n]`` audio; a no-op when the rates agree."""
    if rate_in == rate_out:
        return np.ascontiguousarray(audio, dtype=np.float32)
    out = soxr.resample(np.ascontiguousarray(audio.T, dtype=np.float32), rate_in, rate_out, quality="VHQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Crop from the start or zero-pad at the end to exactly ``length`` samples."""
    if audio.shape[-1] >= length:
        return np.ascontiguousarray(audio[..., :length])
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])]
    return np.pad(audio, pad)

"""RIFF/WAVE encoding with the metadata chunks a sample browser reads, and the reader for them.

soundfile cannot write ``acid`` chunks and writes only some ``LIST/INFO`` tags, so the companion
writes the container itself. A file looks like this (little-endian throughout)::

    RIFF <size> WAVE
      fmt   PCM (format 1) for PCM_16/PCM_24, IEEE float (format 3, cbSize 0) for FLOAT
      fact  frame count (FLOAT only: non-PCM formats must carry one)
      LIST  INFO: INAM title, ISFT software, ICMT comment (the JSON recipe), IGNR genre, ICRD date
      acid  one-shot / loop flags, root note, beats, meter, tempo
      data  interleaved frames

Metadata comes before ``data`` so a browser that reads only the head of a file finds it. Plain
format 1 (not WAVE_FORMAT_EXTENSIBLE) is what libsndfile itself writes for mono/stereo 24-bit
WAV and what every DAW reads; the companion therefore writes 1 or 2 channels only.

PCM scaling is symmetric: ``round(x * (2**(bits-1) - 1))`` after clipping to [-1, 1], the same
factor libsndfile uses, so full scale maps to 0x7FFFFF and never wraps. FLOAT stores the samples
bit-exactly and does not clip (float WAV keeps overs).

Encoding is a generator of byte blocks (:func:`iter_wav`) so a caller can stream a long file to
disk with bounded memory and its own write function; :func:`encode_wav` joins them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import DDError

SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
"""Sample formats the companion writes."""

_BITS = {"PCM_16": 16, "PCM_24": 24, "FLOAT": 32}
_FORMAT_PCM = 1
_FORMAT_IEEE_FLOAT = 3
_BLOCK_FRAMES = 65536  # frames per encoded block: bounds memory for long files
_MAX_RIFF_SIZE = 0xFFFFFFFF

ACID_ONE_SHOT = 0x01
ACID_ROOT_NOTE_SET = 0x02
ACID_STRETCH = 0x04
_ACID_FORMAT = "<IHHfIHHf"  # flags, root note, unknown (0x8000), unknown float, beats, denom, numer, tempo


class WavError(DDError, ValueError):
    """Audio cannot be encoded as WAV, or a file is not a WAV this module can parse."""

    code = "bad_wav"


@dataclass(frozen=True)
class AcidInfo:
    """The ``acid`` chunk: how a DAW should treat the sample (one-shot or tempo-synced loop).

    ``root_note`` is a MIDI note (0..127) or ``None``; ``beats`` and ``tempo`` are 0 when unknown.
    """

    one_shot: bool = True
    root_note: int | None = None
    beats: int = 0
    tempo: float = 0.0
    meter: tuple[int, int] = (4, 4)

    def __post_init__(self) -> None:
        if self.root_note is not None and not 0 <= self.root_note <= 127:
            raise WavError(f"acid root_note must be a MIDI note in 0..127 or None, got {self.root_note!r}")
        if not 0 <= self.beats <= 0xFFFFFFFF:
            raise WavError(f"acid beats must be in 0..4294967295, got {self.beats!r}")
        if not (np.isfinite(self.tempo) and 0.0 <= self.tempo <= 1000.0):
            raise WavError(f"acid tempo must be 0 (unknown) or a BPM up to 1000, got {self.tempo!r}")
        numer, denom = self.meter
        if not (1 <= numer <= 64 and denom in (1, 2, 4, 8, 16, 32)):
            raise WavError(f"acid meter must be numerator 1..64 over 1/2/4/8/16/32, got {numer}/{denom}")

    @property
    def flags(self) -> int:
        flags = ACID_ONE_SHOT if self.one_shot else 0
        if self.root_note is not None:
            flags |= ACID_ROOT_NOTE_SET
        if not self.one_shot and self.tempo > 0:
            flags |= ACID_STRETCH  # a loop with a known tempo may be stretched to the session's
        return flags

    def to_bytes(self) -> bytes:
        numer, denom = self.meter
        root = self.root_note if self.root_note is not None else 0
        return struct.pack(_ACID_FORMAT, self.flags, root, 0x8000, 0.0, self.beats, denom, numer, self.tempo)

    @classmethod
    def from_bytes(cls, payload: bytes) -> AcidInfo:
        if len(payload) < struct.calcsize(_ACID_FORMAT):
            raise WavError(f"acid chunk must be 24 bytes, got {len(payload)}")
        flags, root, _, _, beats, denom, numer, tempo = struct.unpack_from(_ACID_FORMAT, payload)
        return cls(
            one_shot=bool(flags & ACID_ONE_SHOT),
            root_note=root if flags & ACID_ROOT_NOTE_SET else None,
            beats=beats,
            tempo=float(tempo),
            meter=(numer or 4, denom or 4),
        )


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """One RIFF chunk; odd payloads get the pad byte that the size field does not count."""
    pad = b"\0" if len(payload) % 2 else b""
    return chunk_id + struct.pack("<I", len(payload)) + payload + pad


def _info_chunk(info: Mapping[str, str]) -> bytes:
    parts = [b"INFO"]
    for key, value in info.items():
        if len(key) != 4 or not key.isascii() or not key.isalnum():
            raise WavError(f"INFO keys must be 4 ASCII letters/digits such as 'INAM', got {key!r}")
        if not isinstance(value, str):
            raise WavError(f"INFO value for {key} must be a string, got {type(value).__name__}")
        if "\0" in value:
            raise WavError(f"INFO value for {key} must not contain NUL characters")
        parts.append(_chunk(key.encode("ascii"), value.encode("utf-8") + b"\0"))
    return _chunk(b"LIST", b"".join(parts))


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Validate ``[channels, frames]`` float audio; return it as C-contiguous float32.

    Raises :class:`WavError` naming the bad shape, dtype or the count of non-finite samples.
    """
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise WavError(f"audio must be a 2-D array [channels, frames], got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise WavError(f"audio must be float32 in [-1, 1], got dtype {audio.dtype}")
    channels, frames = audio.shape
    if channels not in (1, 2):
        hint = " (did you pass [frames, channels]? transpose it)" if frames in (1, 2) else ""
        raise WavError(f"audio must have 1 or 2 channels, got shape {audio.shape}{hint}")
    if frames < 1:
        raise WavError(f"audio must have at least one frame, got shape {audio.shape}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise WavError(f"audio has {bad} NaN or infinite samples; only finite values can be written")
    return audio


def _encode_block(block: np.ndarray, subtype: str) -> bytes:
    """Interleave ``[channels, frames]`` float32 and encode it as little-endian sample bytes."""
    frames = block.T  # [frames, channels] is WAV's interleaved order
    if subtype == "FLOAT":
        return np.ascontiguousarray(frames, dtype="<f4").tobytes()
    full_scale = (1 << (_BITS[subtype] - 1)) - 1
    ints = np.rint(np.clip(frames, -1.0, 1.0).astype(np.float64) * full_scale).astype("<i4")
    if subtype == "PCM_16":
        return ints.astype("<i2").tobytes()
    # 24-bit: keep the three low bytes of each little-endian int32.
    return ints.reshape(-1, 1).view(np.uint8)[:, :3].tobytes()


def iter_wav(
    audio: np.ndarray,
    rate: int,
    *,
    subtype: str = "PCM_24",
    info: Mapping[str, str] | None = None,
    acid: AcidInfo | None = None,
) -> Iterator[bytes]:
    """Yield the bytes of a complete WAV file: the header with all metadata, then data blocks.

    ``audio`` is ``[channels, frames]`` float at ``rate`` Hz; it is validated before the first
    block is yielded, so a bad input never leaves a half-started file.
    """
    audio = check_audio(audio)
    if subtype not in SUBTYPES:
        raise WavError(f"subtype must be one of {', '.join(SUBTYPES)}, got {subtype!r}")
    if not isinstance(rate, int) or not 1000 <= rate <= 768000:
        raise WavError(f"rate must be an integer in 1000..768000 Hz, got {rate!r}")
    channels, frames = audio.shape
    bits = _BITS[subtype]
    block_align = channels * bits // 8
    data_size = frames * block_align
    fmt_tag = _FORMAT_IEEE_FLOAT if subtype == "FLOAT" else _FORMAT_PCM
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block_align, block_align, bits)
    head = [_chunk(b"fmt ", fmt + (struct.pack("<H", 0) if fmt_tag != _FORMAT_PCM else b""))]
    if fmt_tag != _FORMAT_PCM:
        head.append(_chunk(b"fact", struct.pack("<I", frames)))
    if info:
        head.append(_info_chunk(info))
    if acid is not None:
        head.append(_chunk(b"acid", acid.to_bytes()))
    head_bytes = b"".join(head)
    riff_size = 4 + len(head_bytes) + 8 + data_size + (data_size % 2)
    if riff_size > _MAX_RIFF_SIZE:
        raise WavError(f"audio of {frames} frames is too long for a WAV file (4 GiB limit); shorten it")
    yield (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + head_bytes + b"data" + struct.pack("<I", data_size)
    )
    for start in range(0, frames, _BLOCK_FRAMES):
        yield _encode_block(audio[:, start : start + _BLOCK_FRAMES], subtype)
    if data_size % 2:
        yield b"\0"


def encode_wav(
    audio: np.ndarray,
    rate: int,
    *,
    subtype: str = "PCM_24",
    info: Mapping[str, str] | None = None,
    acid: AcidInfo | None = None,
) -> bytes:
    """The whole WAV file as bytes (see :func:`iter_wav`)."""
    return b"".join(iter_wav(audio, rate, subtype=subtype, info=info, acid=acid))


def read_chunks(path: str | Path) -> dict[str, bytes]:
    """Every top-level chunk's payload except ``data``, keyed by chunk id (``"LIST"`` by list type).

    ``LIST`` chunks are keyed ``"LIST/INFO"``, ``"LIST/adtl"``... The ``data`` payload is skipped
    without being read. Raises :class:`WavError` if the file is not RIFF/WAVE or a chunk is cut off.
    """
    path = Path(path)
    chunks: dict[str, bytes] = {}
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            raise WavError(f"{path} is not a RIFF/WAVE file (header {header[:12]!r})")
        while True:
            chunk_head = f.read(8)
            if len(chunk_head) < 8:
                break  # end of file (a stray byte or two after the last chunk is tolerated)
            chunk_id = chunk_head[:4].decode("latin-1")
            (size,) = struct.unpack("<I", chunk_head[4:])
            if chunk_id == "data":
                f.seek(size + (size % 2), 1)
                continue
            payload = f.read(size)
            if len(payload) < size:
                raise WavError(f"{path}: chunk {chunk_id!r} claims {size} bytes but the file ends early")
            f.seek(size % 2, 1)
            if chunk_id == "LIST" and len(payload) >= 4:
                chunk_id = "LIST/" + payload[:4].decode("latin-1")
                payload = payload[4:]
            chunks.setdefault(chunk_id, payload)
    return chunks


def read_info(path: str | Path) -> dict[str, str]:
    """The ``LIST/INFO`` tags of a WAV file as ``{"INAM": ..., "ICMT": ...}``; empty if it has none."""
    payload = read_chunks(path).get("LIST/INFO", b"")
    info: dict[str, str] = {}
    pos = 0
    while pos + 8 <= len(payload):
        key = payload[pos : pos + 4].decode("latin-1")
        (size,) = struct.unpack_from("<I", payload, pos + 4)
        raw = payload[pos + 8 : pos + 8 + size]
        info[key] = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        pos += 8 + size + (size % 2)
    return info


def read_acid(path: str | Path) -> AcidInfo | None:
    """The ``acid`` chunk of a WAV file, or ``None`` if it has none."""
    payload = read_chunks(path).get("acid")
    return None if payload is None else AcidInfo.from_bytes(payload)


def read_recipe(path: str | Path) -> dict | None:
    """The JSON recipe the companion stored in the ``ICMT`` comment, or ``None`` if there is none."""
    comment = read_info(path).get("ICMT")
    if not comment:
        return None
    try:
        recipe = json.loads(comment)
    except json.JSONDecodeError:
        return None  # a comment written by another tool: not ours, not an error
    return recipe if isinstance(recipe, dict) else None

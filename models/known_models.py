"""The six public Harmonai checkpoints: their audio format, recognised by file name or hash.

The original ``.ckpt`` files carry no sample rate or window; this table supplies them.
SHA-256 prefixes are from the Dance Diffusion notebook's model map.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    name: str
    file_stems: tuple[str, ...]
    sample_rate: int
    sample_size: int
    sha256_prefix: str
    trained_on: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("glitch-440k", ("gwf-440k", "glitch-440k"), 48000, 65536, "48caefdc", "samples from glitch.cool"),
    KnownModel("jmann-small-190k", ("jmann-small-190k",), 48000, 65536, "1e2a23a5", "Jonathan Mann's Song-A-Day"),
    KnownModel("jmann-large-580k", ("jmann-large-580k",), 48000, 131072, "6b32b5ff", "Jonathan Mann's Song-A-Day"),
    KnownModel("maestro-150k", ("maestro-uncond-150k", "maestro-150k"), 16000, 65536, "49d9abca", "MAESTRO piano"),
    KnownModel("unlocked-250k", ("unlocked-uncond-250k", "unlocked-250k"), 16000, 65536, "af337c84",
               "archive.org Unlocked Recordings"),
    KnownModel("honk-140k", ("honk-140k",), 16000, 65536, "a6684784", "Canada goose calls (xeno-canto)"),
)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def recognise(path: Path, sha256: str | None = None) -> KnownModel | None:
    """The public checkpoint a file is, by its stem first, else by its hash (when given)."""
    stem = path.stem.lower()
    for model in KNOWN_MODELS:
        if stem in model.file_stems or stem == model.name:
            return model
    if sha256:
        for model in KNOWN_MODELS:
            if sha256.startswith(model.sha256_prefix):
                return model
    return None

"""Where models live: the shipped default, the user's model folder, and paths given directly."""

from __future__ import annotations

import logging
from pathlib import Path

from platformdirs import user_data_dir

from models.errors import CheckpointError

log = logging.getLogger("dd.models")

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
DEFAULT_MODEL = DEFAULT_DIR / "dd-default.safetensors"
DEFAULT_ONNX = DEFAULT_DIR / "dd-default.onnx"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".onnx")


def user_models_dir() -> Path:
    """The folder where users drop checkpoints and where ``train`` exports land."""
    return Path(user_data_dir("dd-companion", appauthor=False)) / "models"


def installed_models() -> list[Path]:
    """The shipped default model plus every model file or diffusers folder in the user's folder."""
    found = [p for p in (DEFAULT_MODEL, DEFAULT_ONNX) if p.is_file()]
    folder = user_models_dir()
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.suffix.lower() in MODEL_SUFFIXES or (entry / "unet" / "config.json").is_file():
                found.append(entry)
    return found


def resolve_model(model: str | Path | None) -> Path:
    """A path for ``model``: None or "default" is the shipped model; a bare name looks in the user folder."""
    if model is None or str(model) == "default":
        if DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        if DEFAULT_ONNX.is_file():
            return DEFAULT_ONNX
        raise CheckpointError(f"the default model is missing from '{DEFAULT_DIR}'; reinstall or run 'make default-model'")
    path = Path(model).expanduser()
    if path.exists():
        return path
    folder = user_models_dir()
    for candidate in [folder / str(model)] + [folder / f"{model}{suffix}" for suffix in MODEL_SUFFIXES]:
        if candidate.exists():
            return candidate
    names = [p.stem if p.is_file() else p.name for p in installed_models()]
    raise CheckpointError(f"model '{model}' not found: not a path, and not one of the installed models {names}")

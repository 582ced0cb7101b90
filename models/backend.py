"""The seam between samplers and runtimes: a backend owns a network and hands out denoisers.

A denoiser is ``denoise(x, t) -> v`` on NumPy arrays (``[batch, channels, length]``, ``[batch]``);
precision, device placement and threading belong to the backend. This module imports neither torch
nor onnxruntime, so the runtime can start with only one of them installed. Which runtime loads a
given model file is chosen above ``models`` (:func:`companion.engine.model_files.load_backend`), since
the ONNX Runtime backend lives in ``export``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from models.config import ModelConfig
from models.errors import ConfigError

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]
BACKENDS = ("auto", "torch", "onnxruntime")


class Backend(Protocol):
    """A loaded model ready to denoise; one worker thread uses it at a time."""

    config: ModelConfig
    kind: str  # "torch" or "onnxruntime"
    device: str
    model_hash: str  # SHA-256 of the weights file
    source: str  # path of the weights, or a description for built-in models

    def denoiser(self, labels: np.ndarray | None) -> Denoiser: ...

    def describe(self) -> dict[str, Any]: ...


def describe_common(backend: Backend) -> dict[str, Any]:
    """What every backend's ``describe()`` starts with: the model, the runtime and the weights."""
    config = backend.config
    return {
        "name": config.name,
        "backend": backend.kind,
        "device": backend.device,
        "sample_rate": config.sample_rate,
        "sample_size": config.sample_size,
        "channels": config.channels,
        "categories": list(config.categories),
        "hash": backend.model_hash[:16],
        "source": backend.source,
        "notes": config.notes,
    }


def check_labels(config: ModelConfig, labels: np.ndarray | None) -> np.ndarray | None:
    """Category labels for a denoiser as int64 (None for unconditional models); -1 is "no category"."""
    if not config.categories:
        if labels is not None and any(label is not None for label in np.atleast_1d(labels)):
            raise ConfigError(f"model '{config.name}' is unconditional; it takes no category")
        return None
    if labels is None:
        raise ConfigError(f"model '{config.name}' needs a category: one of {list(config.categories)}")
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.ndim > 1 or np.any(label_array < -1) or np.any(label_array >= config.n_categories):
        raise ConfigError(f"labels must be category indices in 0..{config.n_categories - 1} "
                          f"(or -1: no category), got {np.asarray(labels).tolist()}")
    return label_array


def available_backends() -> list[str]:
    return [name for name in ("torch", "onnxruntime") if importlib.util.find_spec(name) is not None]

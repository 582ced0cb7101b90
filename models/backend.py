"""The seam between samplers and runtimes: a backend owns a network and hands out denoisers.

A denoiser is ``denoise(x, t) -> v`` on NumPy arrays (``[batch, channels, length]``, ``[batch]``);
precision, device placement and threading belong to the backend. This module imports neither torch
nor onnxruntime, so the runtime can start with only one of them installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
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


def load_backend(
    model: str | Path | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    sample_rate: int | None = None,
    sample_size: int | None = None,
) -> Backend:
    """Load ``model`` (a path, a known name, or None for the default model) on the chosen runtime."""
    from models.registry import DEFAULT_MODEL, DEFAULT_ONNX, resolve_model

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got '{backend}'")
    path = resolve_model(model)
    torch_missing = "torch" not in available_backends()
    if path == DEFAULT_MODEL and DEFAULT_ONNX.is_file():
        if backend == "onnxruntime" or (backend == "auto" and (torch_missing or not _torch_has_gpu())):
            # the shipped model's ONNX export: no torch needed, and the fastest runtime on the CPU
            # (benchmarks/backends.py: 2.2x torch end to end for the default model)
            path = DEFAULT_ONNX
    kind = backend
    if kind == "auto":
        kind = "onnxruntime" if path.suffix == ".onnx" else "torch"
        if kind == "torch" and torch_missing:
            raise ConfigError(
                f"model '{path.name}' needs torch, which is not installed; install the torch extra "
                "(pip install 'dd-companion[torch]') or use an exported .onnx model"
            )
    if kind == "torch":
        if "torch" not in available_backends():
            raise ConfigError("backend 'torch' requested but torch is not installed (pip install 'dd-companion[torch]')")
        from models.torch_backend import TorchBackend

        return TorchBackend.load(path, device=device, precision=precision, sample_rate=sample_rate,
                                 sample_size=sample_size)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"backend 'onnxruntime' needs an exported .onnx model, got '{path.name}'; "
                          f"make one with 'dd-companion export --model {path}'")
    try:
        from export.ort_backend import OrtBackend
    except ImportError as exc:
        raise ConfigError(f"backend 'onnxruntime' is not available here: {exc}") from None
    return OrtBackend.load(path, device=device, precision=precision)


def _torch_has_gpu() -> bool:
    """Whether torch can use CUDA or Apple's MPS here (only asked when torch is installed)."""
    torch = importlib.import_module("torch")  # lazily: the light runtime has no torch
    return bool(torch.cuda.is_available() or torch.backends.mps.is_available())

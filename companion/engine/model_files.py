"""Model files: which runtime loads one (torch or ONNX Runtime) and what a file says of itself.

The choice lives here, above both ``models`` (the torch backend) and ``export`` (the ONNX Runtime
backend), so that neither of those imports the other. Neither runtime is imported until a model of
its kind is loaded, so the light runtime starts without torch.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from models.backend import BACKENDS, Backend, available_backends
from models.errors import ConfigError, DDError
from models.registry import DEFAULT_MODEL, DEFAULT_ONNX, resolve_model


def load_backend(
    model: str | Path | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    sample_rate: int | None = None,
    sample_size: int | None = None,
    threads: int | None = None,
) -> Backend:
    """Load ``model`` (a path, a known name, or None for the default model) on the chosen runtime.

    ``threads`` fixes the runtime's intra-op threads (None: the runtime's choice). torch's count is
    process-wide, so it is set for the whole process; a pack renders in a process of its own.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    path, kind = choose_runtime(model, backend)
    if kind == "torch":
        if "torch" not in available_backends():
            raise ConfigError("backend 'torch' requested but torch is not installed (pip install 'dd-companion[torch]')")
        from models.torch_backend import TorchBackend

        if threads is not None:
            importlib.import_module("torch").set_num_threads(threads)
        return TorchBackend.load(path, device=device, precision=precision, sample_rate=sample_rate,
                                 sample_size=sample_size)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"backend 'onnxruntime' needs an exported .onnx model, got '{path.name}'; "
                          f"make one with 'dd-companion export --model {path}'")
    try:
        from export.ort_backend import OrtBackend
    except ImportError as exc:
        raise ConfigError(f"backend 'onnxruntime' is not available here: {exc}") from None
    return OrtBackend.load(path, device=device, precision=precision, threads=threads)


def choose_runtime(model: str | Path | None = None, backend: str = "auto") -> tuple[Path, str]:
    """The file that ``load_backend(model, backend=backend)`` loads and the runtime that loads it, without
    loading anything: with ``backend="auto"`` the shipped model runs on its ONNX export unless torch has a GPU."""
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
    return path, kind


def _torch_has_gpu() -> bool:
    """Whether torch can use CUDA or Apple's MPS here (only asked when torch is installed)."""
    torch = importlib.import_module("torch")  # lazily: the light runtime has no torch
    return bool(torch.cuda.is_available() or torch.backends.mps.is_available())


def _config_facts(config: dict, default_name: str) -> dict:
    """The listing's facts from a model config's JSON object."""
    rate, size = config.get("sample_rate"), config.get("sample_size")
    return dict(name=config.get("name", default_name), sample_rate=rate,
                seconds=round(size / rate, 3) if size and rate else None, categories=config.get("categories", []),
                notes=config.get("notes", ""), license=config.get("license", ""))


def describe_file(path: Path) -> dict:
    """Metadata of an installed model without building its network."""
    info: dict = {"path": str(path), "name": path.stem if path.is_file() else path.name}
    try:
        if path.suffix == ".safetensors":
            from models.checkpoints import read_own_metadata

            info.update(_config_facts(json.loads(read_own_metadata(path).get("config", "{}")), info["name"]),
                        format="dd-companion")
        elif path.suffix == ".onnx":
            info.update(format="onnx")
            try:
                from export.ort_backend import read_metadata
            except ImportError:  # no ONNX Runtime installed: the file is listed without its metadata
                return info
            info.update(_config_facts(json.loads(read_metadata(path).get("config", "{}")), info["name"]))
        elif path.is_dir():
            info.update(format="diffusers")
        else:
            info.update(format="harmonai-ckpt")
    except (DDError, OSError, ValueError, KeyError) as exc:
        info.update(error=str(exc))
    return info

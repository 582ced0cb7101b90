"""``dd-companion --version``: the version, the model that would be loaded, and the runtime that runs it."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path

from companion.config.version import VERSION
from companion.engine.model_files import choose_runtime, describe_file
from models.errors import DDError
from models.known_models import file_sha256


def package_version(name: str) -> str | None:
    """The installed version of ``name``, or None when it is not installed. Inside the desktop app the
    package metadata is not bundled, so the module's own ``__version__`` answers there."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module(name), "__version__", "unknown version"))


def model_line(path: Path) -> str:
    info = describe_file(path)
    digest = None
    if path.suffix == ".onnx":
        try:
            from export.ort_backend import read_metadata

            digest = read_metadata(path).get("source_sha256")
        except (ImportError, DDError, OSError):
            digest = None
    if digest is None and path.is_file():
        digest = file_sha256(path)
    facts = [f"sha256 {digest[:12]}" if digest else None,
             f"{info['seconds']} s at {info['sample_rate']} Hz" if info.get("seconds") else None]
    return f"model: {info.get('name', path.stem)} ({', '.join(f for f in facts if f)}) from {path}"


def version_text() -> str:
    """Three lines: the companion, the default model it loads, and the runtime (with what else is installed)."""
    frozen = getattr(sys, "frozen", False)
    lines = [f"dd-companion {VERSION} ({'desktop app' if frozen else 'Python package'}, Python "
             f"{platform.python_version()}, {platform.system()} {platform.machine()})"]
    try:
        path, kind = choose_runtime(None, "auto")
    except DDError as exc:
        return "\n".join([*lines, f"model: none ({exc})"])
    lines.append(model_line(path))
    versions = {name: package_version(name) for name in ("onnxruntime", "torch")}
    others = [f"{name} {v}" for name, v in versions.items() if name != kind and v]
    lines.append(f"runtime: {kind} {versions.get(kind) or ''}".rstrip()
                 + (f" (also installed: {', '.join(others)})" if others else ""))
    return "\n".join(lines)

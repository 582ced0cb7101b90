"""The dependency rules of the design card, checked on the source: who may import torch, onnxruntime, Qt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "companion", "export", "osc_protocol", "gui")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_only_gui_imports_qt(package):
    if package == "gui":
        return
    offenders = [p.name for p in sources(package) if "PySide6" in imported_modules(p)]
    assert offenders == [], f"{package}/ imports PySide6 in {offenders}"


def test_gui_imports_neither_torch_nor_onnxruntime():
    offenders = [p.name for p in sources("gui") if imported_modules(p) & {"torch", "onnxruntime"}]
    assert offenders == []


# modules of the light runtime: they must run with only NumPy + ONNX Runtime installed
TORCH_FREE = [
    "models/samplers.py", "models/schedules.py", "models/generate.py", "models/backend.py", "models/config.py",
    "models/registry.py", "models/audio_io.py", "models/synth.py", "models/features.py",
    "companion/folder.py", "companion/wavfile.py", "companion/cli.py",
    "export/ort_backend.py", "export/providers.py", "companion/cmd_export.py",
]


@pytest.mark.parametrize("relpath", TORCH_FREE + [str(p.relative_to(ROOT)) for p in sources("osc_protocol")])
def test_light_runtime_modules_do_not_import_torch(relpath):
    path = ROOT / relpath
    assert path.is_file(), relpath
    assert "torch" not in imported_modules(path), f"{relpath} imports torch"


def test_dependencies_point_one_way():
    """models never imports the companion, the GUI or the OSC layer."""
    for path in sources("models"):
        assert not imported_modules(path) & {"companion", "gui", "osc_protocol"}, path.name

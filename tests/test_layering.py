"""The dependency rules of the design card, checked on the source.

Who may import torch, onnxruntime and Qt; which of the project's packages may import which (the layers);
and no import cycle between modules anywhere. Every import statement counts, at any depth (an import
inside a function is a dependency too, only a later one).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "companion", "export", "osc_protocol", "gui")

# layer -> the layers it may import (its own included). A module's layer is the longest entry that
# prefixes its dotted name. Read bottom up: models; export and osc_protocol beside it; the companion's
# sub-packages stacked config < output < engine < live < service < cli; the window beside cli.
_COMPANION_CORE = ("companion.config", "companion.output", "companion.engine", "companion.live",
                   "companion.service")
LAYERS: dict[str, frozenset[str]] = {
    "models": frozenset({"models"}),
    "export": frozenset({"export", "models"}),
    "osc_protocol": frozenset({"osc_protocol"}),
    "companion.config": frozenset({"companion.config", "models"}),
    "companion.output": frozenset({"companion.output", "models"}),
    "companion.engine": frozenset({"companion.engine", "companion.config", "companion.output", "models", "export"}),
    "companion.live": frozenset({"companion.live", "companion.engine", "companion.config", "companion.output",
                                 "models", "export"}),
    "companion.service": frozenset({*_COMPANION_CORE, "models", "export", "osc_protocol"}),
    # packs and kits: beside the service, never imported by it (serve needs no Ray)
    "companion.pack": frozenset({"companion.pack", "companion.engine", "companion.config", "companion.output",
                                 "models", "export"}),
    # the entry point: every layer, the window included (the gui command imports it lazily)
    "companion.cli": frozenset({"companion.cli", *_COMPANION_CORE, "companion.pack", "models", "export", "osc_protocol",
                                "gui"}),
    "companion": frozenset({"companion", "companion.cli"}),  # companion/__init__.py and __main__.py
    # the window: the companion's parts but not its command line; never torch or onnxruntime (below)
    "gui": frozenset({"gui", *_COMPANION_CORE, "models", "osc_protocol"}),
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``."""
    return {name.split(".")[0] for name in imported_names(path)}


def imported_names(path: Path) -> set[str]:
    """Every dotted name ``path`` imports (absolute imports; the project uses no relative ones)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the project imports by absolute name"
            found.add(node.module or "")
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a name resolves to its longest known module)."""
    paths = {module_name(p, root): p for package in packages for p in sources(package, root)}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets = set()
        for name in imported_names(path):
            while name and name not in paths:
                name = name.rpartition(".")[0]
            # importing a package's module runs the package's __init__ too, but that is no dependency
            # of the package on the importer: only edges to modules that are not our own ancestors count
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
        graph[module] = targets
    return graph


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def layer_of(module: str) -> str | None:
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        allowed = LAYERS[layer_of(module)]
        for target in sorted(targets):
            if layer_of(target) not in allowed:
                found.append(f"{module} imports {target} ({layer_of(module)} may import {sorted(allowed)})")
    return found


# ---------------------------------------------------------------- the project's own rules


def test_no_import_cycle_anywhere():
    cycles = import_cycles(module_graph(ROOT, PACKAGES))
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in module_graph(ROOT, PACKAGES) if layer_of(m) is None]
    assert unplaced == [], f"modules in no layer of LAYERS (add their sub-package there): {unplaced}"


def test_dependencies_point_down_the_layers():
    assert layer_violations(module_graph(ROOT, PACKAGES)) == []


def test_every_companion_sub_package_says_what_it_holds_and_may_import():
    packages = sorted(p.parent for p in (ROOT / "companion").rglob("__init__.py"))
    assert len(packages) >= 7  # companion itself and its six sub-packages
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        name = module_name(package / "__init__.py")
        assert doc and len(doc.split()) >= 25, f"{name}/__init__.py needs a docstring saying what it holds"
        assert "import" in doc, f"{name}/__init__.py's docstring must say what the package may import"
        assert name in LAYERS, f"{name} is a sub-package with no layer in LAYERS"


def test_companion_modules_are_in_sub_packages():
    """companion/ itself holds only its package file and ``python -m companion``."""
    assert sorted(p.name for p in (ROOT / "companion").glob("*.py")) == ["__init__.py", "__main__.py"]


@pytest.mark.parametrize("package", PACKAGES)
def test_only_gui_imports_qt(package):
    if package == "gui":
        return
    offenders = [p.name for p in sources(package) if "PySide6" in imported_modules(p)]
    assert offenders == [], f"{package}/ imports PySide6 in {offenders}"


def test_gui_imports_neither_torch_nor_onnxruntime():
    offenders = [p.name for p in sources("gui") if imported_modules(p) & {"torch", "onnxruntime"}]
    assert offenders == []


# modules of the light runtime: they must run with only NumPy + ONNX Runtime installed. All of companion,
# the window and the OSC layer; of models and export, these:
TORCH_FREE = [
    "models/samplers.py", "models/schedules.py", "models/generate.py", "models/backend.py", "models/config.py",
    "models/registry.py", "models/audio_io.py", "models/synth.py", "models/features.py", "models/finish.py",
    "export/ort_backend.py", "export/providers.py",
]
LIGHT = TORCH_FREE + [str(p.relative_to(ROOT)) for pkg in ("companion", "gui", "osc_protocol") for p in sources(pkg)]


@pytest.mark.parametrize("relpath", LIGHT)
def test_light_runtime_modules_do_not_import_torch(relpath):
    path = ROOT / relpath
    assert path.is_file(), relpath
    assert "torch" not in imported_modules(path), f"{relpath} imports torch"


# ---------------------------------------------------------------- the checks themselves can fail


def _tree(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    _tree(tmp_path, {
        "companion/__init__.py": "",
        "companion/engine/__init__.py": "",
        "companion/engine/a.py": "from companion.engine.b import thing\n",
        "companion/engine/b.py": "def thing():\n    from companion.engine import a\n    return a\n",
        "companion/engine/c.py": "from companion.engine.a import thing\n",
    })
    assert import_cycles(module_graph(tmp_path, ["companion"])) == [["companion.engine.a", "companion.engine.b"]]


def test_the_layer_check_refuses_an_upward_import(tmp_path):
    _tree(tmp_path, {
        "models/__init__.py": "",
        "models/backend.py": "def load():\n    from export.ort_backend import OrtBackend\n",
        "export/__init__.py": "",
        "export/ort_backend.py": "from models.backend import load\n",
        "gui/__init__.py": "",
        "gui/app.py": "from companion.cli.main import main\nfrom companion.engine.jobs import Job\n",
        "companion/__init__.py": "",
        "companion/cli/__init__.py": "",
        "companion/cli/main.py": "import gui.app\n",
        "companion/engine/__init__.py": "",
        "companion/engine/jobs.py": "",
    })
    assert layer_violations(module_graph(tmp_path, PACKAGES)) == [
        "gui.app imports companion.cli.main (gui may import "
        f"{sorted(LAYERS['gui'])})",
        "models.backend imports export.ort_backend (models may import ['models'])",
    ]

"""``dd-companion models``: the installed models with their metadata, and the known public ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.errors import DDError
from models.known_models import KNOWN_MODELS
from models.registry import installed_models, user_models_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list installed and known models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


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


def run(args: argparse.Namespace) -> int:
    installed = [describe_file(p) for p in installed_models()]
    known = [{"name": m.name, "sample_rate": m.sample_rate, "seconds": round(m.sample_size / m.sample_rate, 2),
              "trained_on": m.trained_on} for m in KNOWN_MODELS]
    if args.json:
        print(json.dumps({"installed": installed, "known_public": known, "user_folder": str(user_models_dir())}, indent=2))
        return 0
    print("Installed models:")
    for info in installed:
        cats = ", ".join(info.get("categories") or []) or "unconditional"
        rate = f"{info['sample_rate']} Hz" if info.get("sample_rate") else ""
        print(f"  {info['name']:<24} {info.get('format', ''):<13} {rate:<9} {cats}")
        print(f"  {'':<24} {info['path']}")
        if info.get("error"):
            print(f"  {'':<24} error: {info['error']}")
    print(f"\nPut checkpoints (.ckpt, .safetensors, diffusers folders) in {user_models_dir()}")
    print("Public Harmonai checkpoints this app recognises (download them yourself; nothing is fetched):")
    for m in known:
        print(f"  {m['name']:<18} {m['sample_rate']} Hz, {m['seconds']} s window, {m['trained_on']}")
    return 0

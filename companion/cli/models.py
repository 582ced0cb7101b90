"""``dd-companion models``: the installed models with their metadata, and the known public ones."""

from __future__ import annotations

import argparse
import json

from companion.engine.model_files import describe_file
from models.known_models import KNOWN_MODELS
from models.registry import installed_models, user_models_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list installed and known models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


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

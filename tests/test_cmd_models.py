"""``dd-companion models``: each installed file listed with the metadata it carries, a broken one with its error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from companion.cli.main import main
from companion.engine.model_files import describe_file
from models.registry import DEFAULT_MODEL, DEFAULT_ONNX


def test_the_shipped_files_are_listed_with_their_own_metadata():
    weights, graph = describe_file(DEFAULT_MODEL), describe_file(DEFAULT_ONNX)
    assert weights["format"] == "dd-companion" and graph["format"] == "onnx"
    for info in (weights, graph):  # the ONNX export carries the same config as the weights it came from
        assert info["name"] == "dd-default-v4" and info["sample_rate"] == 44100 and info["seconds"] == 0.743
        assert "kick" in info["categories"] and "error" not in info


def test_a_broken_file_is_listed_with_its_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    info = describe_file(broken)
    assert info["format"] == "onnx" and "is not a loadable ONNX model" in info["error"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    assert "is not a readable safetensors file" in describe_file(bad)["error"]


def test_the_command_prints_json(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {m["format"] for m in listing["installed"]} >= {"dd-companion", "onnx"}
    assert any(m["name"] == "glitch-440k" for m in listing["known_public"])


def test_version_says_version_model_and_runtime():
    from companion.config.version import VERSION

    done = subprocess.run([sys.executable, "-m", "companion", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    first, model, runtime = done.stdout.strip().splitlines()
    assert first.startswith(f"dd-companion {VERSION} (Python package, Python 3.")
    assert model.startswith("model: dd-default") and "sha256 " in model and "44100 Hz" in model
    # on a CPU the shipped model runs on its ONNX export; torch is listed beside it when installed
    assert runtime.startswith("runtime: onnxruntime ") and "also installed: torch 2.13.0" in runtime

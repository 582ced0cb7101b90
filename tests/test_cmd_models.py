"""``dd-companion models``: each installed file listed with the metadata it carries, a broken one with its error."""

from __future__ import annotations

import json

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

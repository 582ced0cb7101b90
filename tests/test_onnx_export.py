"""ONNX export: the graph's inputs and metadata, parity with torch, the GroupNorm fix, failures that say why."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from companion.cli.main import main as cli_main
from export.onnx_export import (
    ExportError,
    FixedResample1d,
    TwoStageGroupNorm,
    export_onnx,
    export_ready_copy,
    resolve_source,
)
from models.checkpoints import save_model
from models.errors import CheckpointError, ConfigError
from models.known_models import file_sha256
from models.network import DiffusionAttnUnet1D
from tests.reference_nets import tiny_config

CATEGORIES = ("kick", "snare", "hat")


def tiny_model(seed: int = 0, **overrides) -> DiffusionAttnUnet1D:
    torch.manual_seed(seed)
    return DiffusionAttnUnet1D(tiny_config(**overrides)).eval()



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny categorical model saved as .safetensors and exported through the command line."""
    folder = tmp_path_factory.mktemp("export")
    model = tiny_model(categories=CATEGORIES)
    weights = save_model(model, folder / "tiny.safetensors")
    out = folder / "tiny.onnx"
    assert cli_main(["export", "--model", str(weights), "--out", str(out)]) == 0
    return model, weights, out


def test_export_writes_config_name_and_source_hash(exported):
    model, weights, out = exported
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(meta["config"]) == model.config.to_dict()
    assert meta["name"] == "tiny"
    assert meta["source_sha256"] == file_sha256(weights)
    assert meta["precision"] == "fp32" and meta["opset"] == "20" and meta["format"] == "dd-companion"


def test_graph_has_dynamic_batch_and_length_and_int64_labels(exported):
    _, _, out = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["x", "t", "labels"]
    assert inputs["labels"].type == "tensor(int64)" and inputs["t"].type == "tensor(float)"
    batch, channels, length = inputs["x"].shape
    assert channels == 2 and isinstance(batch, str) and isinstance(length, str)
    assert inputs["t"].shape == [batch] and inputs["labels"].shape == [batch]


def test_onnx_matches_torch_at_shapes_not_used_for_verification(exported):
    model, _, out = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    config = model.config
    gen = torch.Generator().manual_seed(99)
    for batch, length in ((3, 5 * config.factor), (1, 9 * config.factor)):
        x, t = torch.randn(batch, 2, length, generator=gen), torch.rand(batch, generator=gen)
        labels = torch.randint(0, len(CATEGORIES), (batch,), generator=gen)
        with torch.inference_mode():
            expected = model(x, t, labels).numpy()  # the CPU channels-last path: the app's torch backend
        got = session.run(["v"], {"x": x.numpy(), "t": t.numpy(), "labels": labels.numpy()})[0]
        assert np.abs(got - expected).max() < 1e-5
        # the labels really reach the graph
        other = session.run(["v"], {"x": x.numpy(), "t": t.numpy(), "labels": (labels.numpy() + 1) % 3})[0]
        assert np.abs(other - got).max() > 1e-3


def test_export_copy_leaves_the_model_alone_and_swaps_norms_and_resamplers():
    model = tiny_model()
    copy = export_ready_copy(model)
    assert model.channels_last is True
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in copy.modules())
    assert sum(isinstance(m, FixedResample1d) for m in copy.modules()) == 2 * (model.config.depth - 1)
    x, t = torch.randn(2, 2, 4 * model.config.factor), torch.rand(2)
    with torch.inference_mode():
        np.testing.assert_allclose(copy(x, t).numpy(), model(x, t).numpy(), atol=2e-6)


def test_two_stage_group_norm_equals_group_norm_and_is_more_accurate():
    torch.manual_seed(3)
    norm = nn.GroupNorm(1, 64)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 64, 20000) * 3 + 5  # large mean: where one-pass fp32 reductions drift
    with torch.inference_mode():
        exact = nn.functional.group_norm(x.double(), 1, norm.weight.double(), norm.bias.double(), norm.eps)
        two_stage = TwoStageGroupNorm(norm)(x)
        half = TwoStageGroupNorm(norm).half()(x.half())
    assert (two_stage.double() - exact).abs().max() < 2e-5
    assert half.dtype == torch.float16
    assert (half.double() - exact).abs().max() < 2e-2


def test_too_strict_tolerance_fails_with_the_measured_difference_and_writes_nothing(tmp_path):
    model = tiny_model(seed=1)  # unconditional: also covers the graph without labels
    out = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match=r"max abs \d\.\d+e-\d+.*tolerance for fp32 is 1e-12") as info:
        export_onnx(model, out, tolerance=1e-12, check_batches=(1,))
    assert "batch 1" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == []


def test_fp16_export_is_half_inside_fp32_outside_and_within_its_tolerance(tmp_path):
    model = tiny_model(seed=2, categories=CATEGORIES)
    # legacy here: fast for a tiny network (the default for fp16 is dynamo, tested in the slow test below)
    report = export_onnx(model, tmp_path / "half.onnx", precision="fp16", exporter="legacy",
                         check_lengths=(3 * model.config.factor,))
    assert report.precision == "fp16" and report.tolerance == 2e-2
    assert 1e-5 < report.max_abs_diff < 5e-3  # really half precision, and close to torch fp32
    proto = onnx.load(str(report.path))
    conv_weights = [i for i in proto.graph.initializer if i.dims and len(i.dims) == 3]
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"


@pytest.mark.parametrize("kwargs, message", [
    ({"exporter": "jit"}, "exporter must be one of"),
    ({"opset": 21}, "opset for the legacy exporter must be in 14..20, got 21"),
    ({"exporter": "dynamo", "opset": 17}, "must be in 18..20, got 17"),
    ({"precision": "bf16"}, "precision must be one of"),
    ({"tolerance": -1.0}, "tolerance must be in"),
    ({"check_lengths": (50,)}, "multiple of 16 and at least 48, got 50"),
])
def test_bad_export_settings_are_refused_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_onnx(tiny_model(), tmp_path / "x.onnx", **kwargs)


def test_export_sources_are_weights_not_onnx(tmp_path, monkeypatch):
    import models.registry

    monkeypatch.setattr(models.registry, "DEFAULT_MODEL", tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="default model's weights .* do not exist yet"):
        resolve_source("default")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not really")
    with pytest.raises(ConfigError, match="already ONNX"):
        resolve_source(onnx_file)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_dynamo_exporter_gives_the_same_graph_semantics(tmp_path, precision):
    model = tiny_model(seed=4, categories=CATEGORIES)
    report = export_onnx(model, tmp_path / "dynamo.onnx", exporter="auto" if precision == "fp16" else "dynamo",
                         precision=precision)
    assert report.exporter == "dynamo"
    assert report.max_abs_diff < (1e-5 if precision == "fp32" else 5e-3)


def test_a_patched_model_exports_and_matches_torch(tmp_path):
    model = tiny_model(seed=3, patch=4, categories=CATEGORIES)
    report = export_onnx(model, tmp_path / "patched.onnx")
    assert report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "patched.onnx"), providers=["CPUExecutionProvider"])
    length = model.config.factor * 5  # a length the export check did not use
    x = np.random.default_rng(0).standard_normal((1, 2, length)).astype(np.float32)
    t, labels = np.array([0.3], np.float32), np.array([2], np.int64)
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, (x, t, labels), strict=True)))[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(labels)).numpy()
    assert np.abs(got - want).max() < 1e-4

"""Export a Dance Diffusion network to ONNX and prove the file computes what torch computes.

The graph takes ``x`` float32 ``[batch, channels, length]``, ``t`` float32 ``[batch]`` and, for models
with categories, ``labels`` int64 ``[batch]``; it returns ``v`` float32 like ``x``. Batch and length are
dynamic (length must still be a multiple of ``config.factor`` and at least ``config.min_length``, which
the runtime checks). The config, name and SHA-256 of the source weights go into ``metadata_props``.

Exporter: the TorchScript ("legacy") exporter at opset 20, by default, chosen on measurements on the
2-core CI CPU (torch 2.13, ORT 1.32; random weights of the full 221M network): the two graphs run at
the same speed in ORT (single-thread CPU time per forward at 32,768 samples: legacy 3.95 s, dynamo
4.03 s), are equally precise (max abs diff to torch at 65,536 samples: 7.6e-6 both), and opset 20 gives
ORT its native ``Gelu`` with either; but the legacy exporter runs about 4x faster (full network 100 s
vs 412 s, tiny test network ~5 s vs ~40 s on the shared CPU) and needs no symbolic length guard. It is
deprecated, so ``exporter="dynamo"`` is kept working (length declared as ``factor * k`` with
``k >= 3``, as the dynamo exporter requires) with a slow opt-in test; switch the default when torch
drops the legacy path.

Two export-time changes are made to a *copy* of the network (the original is untouched):

- ``GroupNorm(1, C)`` becomes a two-stage normalisation (mean and variance over time, then over
  channels). Exported as is, it becomes Reshape + InstanceNormalization, whose fp32 reduction over
  C x length values in ORT drifts from torch on the full network (measured: max abs 7.8e-4 at 65,536
  samples, over the 1e-4 tolerance); two stages bring it to 7.6e-6 (output scale ~3) and are slightly
  faster.
- The cubic resampling layers get their depthwise kernel as a constant of known channel count: the
  legacy exporter cannot export a convolution whose kernel is built from a traced channel count.

fp16 (``precision="fp16"``) is for GPUs: weights and activations in half, normalisation statistics in
fp32, inputs and outputs still fp32 so the backend does not care. It is checked against torch fp32
with its own tolerance, 2e-2 max abs (full network measured: 3.5e-4 at 24,576 samples, 4.8e-3 at
65,536 with output scale 4.0); ORT's CPU provider runs it too (it casts around the kernels it lacks),
so the check works on machines without a GPU. ``exporter="auto"`` exports fp16 with
the dynamo exporter: the legacy exporter traces by running the network, and torch's CPU fp16
convolutions are ~250x slower than fp32 here (one 512-channel convolution: 152 s vs 0.59 s), so a
full-network trace would take hours; dynamo traces with fake tensors.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoints import LoadedWeights, build_model, load_weights
from models.config import ModelConfig
from models.errors import CheckpointError, ConfigError, DDError
from models.network import CUBIC_KERNEL, DiffusionAttnUnet1D, Downsample1d, Upsample1d

log = logging.getLogger("dd.export")

FORMAT_TAG = "dd-companion"
FORMAT_VERSION = "1"
EXPORTERS = ("auto", "legacy", "dynamo")  # auto: legacy for fp32, dynamo for fp16
OPSETS = {"legacy": range(14, 21), "dynamo": range(18, 21)}  # >= 21 emits GroupNormalization: slower
DEFAULT_OPSET = 20
TOLERANCES = {"fp32": 1e-4, "fp16": 2e-2}  # max abs difference against torch fp32
INPUT_NAMES = ("x", "t", "labels")
OUTPUT_NAME = "v"


class ExportError(DDError):
    """The export failed, or the exported file does not match torch within the tolerance."""

    code = "export_failed"


# --- export-time module swaps ----------------------------------------------------------------------


class TwoStageGroupNorm(nn.Module):
    """``GroupNorm(1, C)`` with statistics reduced over time first, then channels (in fp32)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        if norm.num_groups != 1:
            raise ConfigError(f"only GroupNorm(1, C) is swapped for export, got {norm.num_groups} groups")
        self.eps = norm.eps
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().clone())
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x if x.dtype == torch.float32 else x.float()
        mean = xf.mean(dim=-1, keepdim=True).mean(dim=1, keepdim=True)
        centred = xf - mean
        var = (centred * centred).mean(dim=-1, keepdim=True).mean(dim=1, keepdim=True)
        y = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()[:, None]
        if self.bias is not None:
            y = y + self.bias.float()[:, None]
        return y if y.dtype == x.dtype else y.to(x.dtype)


class FixedResample1d(nn.Module):
    """The cubic down- or up-sampler with its depthwise kernel stored for a known channel count."""

    def __init__(self, channels: int, up: bool) -> None:
        super().__init__()
        self.channels, self.up = channels, up
        kernel = torch.tensor(CUBIC_KERNEL) * (2 if up else 1)
        self.register_buffer("weight", kernel.expand(channels, 1, -1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.pad(x, (2, 2), mode="reflect")
            return F.conv_transpose1d(x, self.weight, stride=2, padding=7, groups=self.channels)
        x = F.pad(x, (3, 3), mode="reflect")
        return F.conv1d(x, self.weight, stride=2, groups=self.channels)


class _Fp16Boundary(nn.Module):
    """Runs a half-precision network behind fp32 inputs and outputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.half(), t, labels).float()


def _resampler_channels(model: DiffusionAttnUnet1D) -> dict[str, int]:
    """Channel count seen by every resampling layer, recorded from one small forward pass."""
    seen: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (Downsample1d, Upsample1d)):
            hooks.append(module.register_forward_pre_hook(
                lambda _m, args, name=name: seen.__setitem__(name, int(args[0].shape[1]))))
    try:
        config = model.config
        x = torch.zeros(1, config.channels, config.min_length)
        labels = torch.zeros(1, dtype=torch.long) if config.categories else None
        with torch.inference_mode():
            model(x, torch.zeros(1), labels)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def export_ready_copy(model: DiffusionAttnUnet1D, precision: str = "fp32") -> nn.Module:
    """A copy of ``model`` on the CPU, plain 1-D layout, with the export-time swaps (module docstring)."""
    if precision not in TOLERANCES:
        raise ConfigError(f"precision must be one of {list(TOLERANCES)}, got '{precision}'")
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    net.channels_last = False
    for name, channels in _resampler_channels(net).items():
        _replace(net, name, FixedResample1d(channels, up=isinstance(net.get_submodule(name), Upsample1d)))
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.GroupNorm):
            _replace(net, name, TwoStageGroupNorm(module))
    if precision == "fp16":
        return _Fp16Boundary(net.half()).eval()
    return net


# --- export ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityCheck:
    batch: int
    length: int
    max_abs_diff: float
    output_scale: float  # max |v| of torch's output, to read the difference against


@dataclass(frozen=True)
class ExportReport:
    path: Path
    config: ModelConfig
    exporter: str
    opset: int
    precision: str
    tolerance: float
    source_sha256: str
    checks: list[ParityCheck] = field(default_factory=list)
    export_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=float("nan"))

    def summary(self) -> str:
        checks = ", ".join(f"batch {c.batch} x {c.length}: {c.max_abs_diff:.2e}" for c in self.checks)
        return (f"exported '{self.config.name}' to {self.path} ({self.precision}, {self.exporter} exporter, "
                f"opset {self.opset}) in {self.export_seconds:.1f} s; ONNX Runtime vs torch max abs diff "
                f"{self.max_abs_diff:.2e} <= {self.tolerance:.0e} ({checks}); verified in {self.verify_seconds:.1f} s")


def _example_inputs(config: ModelConfig, batch: int, length: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.channels, length, generator=gen)
    t = torch.rand(batch, generator=gen)
    labels = torch.randint(0, config.n_categories, (batch,), generator=gen) if config.categories else None
    if labels is not None and batch > 1:
        labels[-1] = -1  # "no category", what classifier-free guidance asks for
    return x, t, labels


def _export_graph(net: nn.Module, config: ModelConfig, exporter: str, opset: int) -> onnx.ModelProto:
    x, t, labels = _example_inputs(config, 2, config.min_length + config.factor, seed=0)
    args = (x, t) if labels is None else (x, t, labels)
    names = list(INPUT_NAMES[: len(args)])
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and tracer warnings are not the user's business
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            buffer = io.BytesIO()
            axes = {"x": {0: "batch", 2: "length"}, "t": {0: "batch"}, OUTPUT_NAME: {0: "batch", 2: "length"}}
            if labels is not None:
                axes["labels"] = {0: "batch"}
            torch.onnx.export(net, args, buffer, dynamo=False, opset_version=opset, input_names=names,
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
            return onnx.load_from_string(buffer.getvalue())
        from torch.export import Dim

        for noisy in ("onnxscript", "onnx_ir"):  # per-pass INFO lines would flood the command line's log
            logging.getLogger(noisy).setLevel(logging.WARNING)

        batch = Dim("batch", min=1, max=1024)
        k = Dim("k", min=3, max=max(3, 2**24 // config.factor))
        shapes: dict[str, dict[int, object]] = {"x": {0: batch, 2: config.factor * k}, "t": {0: batch}}
        if labels is not None:
            shapes["labels"] = {0: batch}
        program = torch.onnx.export(net, args, dynamo=True, opset_version=opset, input_names=names,
                                    output_names=[OUTPUT_NAME], dynamic_shapes=shapes, verbose=False)
        return program.model_proto


def export_onnx(
    model: DiffusionAttnUnet1D,
    out: str | Path,
    *,
    source_sha256: str = "",
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    tolerance: float | None = None,
    check_lengths: Sequence[int] | None = None,
    check_batches: Sequence[int] = (1, 2),
) -> ExportReport:
    """Export ``model`` to ``out`` and verify it; the file appears only once it has passed.

    Verification: ``onnx.checker`` (full check), then ONNX Runtime (CPU) against torch fp32 on seeded
    inputs for every batch in ``check_batches`` and length in ``check_lengths`` (default: the model's
    minimum length and one factor more). Raises :class:`ExportError` with the measured max abs difference
    when it exceeds ``tolerance`` (default :data:`TOLERANCES` for the precision).
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {list(EXPORTERS)}, got '{exporter}'")
    if precision not in TOLERANCES:
        raise ConfigError(f"precision must be one of {list(TOLERANCES)}, got '{precision}'")
    if exporter == "auto":
        exporter = "dynamo" if precision == "fp16" else "legacy"
    if opset not in OPSETS[exporter]:
        allowed = OPSETS[exporter]
        raise ConfigError(f"opset for the {exporter} exporter must be in {allowed.start}..{allowed.stop - 1}, got {opset}")
    tolerance = TOLERANCES[precision] if tolerance is None else float(tolerance)
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance must be in (0, 1), got {tolerance}")
    config = model.config
    lengths = list(check_lengths or (config.min_length, config.min_length + config.factor))
    for length in lengths:
        if length % config.factor or length < config.min_length:
            raise ConfigError(f"check length must be a multiple of {config.factor} and at least "
                              f"{config.min_length}, got {length}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")

    started = time.perf_counter()
    net = export_ready_copy(model, precision)
    try:
        proto = _export_graph(net, config, exporter, opset)
    except (RuntimeError, ValueError, TypeError, torch.onnx.errors.OnnxExporterError) as exc:
        raise ExportError(f"the {exporter} exporter failed for model '{config.name}': {exc}") from exc
    del net
    metadata = {
        "format": FORMAT_TAG, "format_version": FORMAT_VERSION, "config": config.to_json(), "name": config.name,
        "source_sha256": source_sha256, "precision": precision, "exporter": exporter, "opset": str(opset),
        "tolerance": f"{tolerance:g}", "torch_version": torch.__version__,
    }
    onnx.helper.set_model_props(proto, metadata)
    onnx.save_model(proto, str(partial))
    del proto
    export_seconds = time.perf_counter() - started
    try:
        started = time.perf_counter()
        try:
            onnx.checker.check_model(str(partial), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ExportError(f"the exported graph fails the ONNX checker: {exc}") from exc
        checks = verify_against_torch(model, partial, lengths=lengths, batches=check_batches)
        verify_seconds = time.perf_counter() - started
        worst = max(checks, key=lambda c: c.max_abs_diff)
        if not worst.max_abs_diff <= tolerance:  # also catches NaN
            raise ExportError(
                f"ONNX Runtime differs from torch by max abs {worst.max_abs_diff:.3e} (batch {worst.batch}, "
                f"length {worst.length}, output scale {worst.output_scale:.3f}); tolerance for {precision} is "
                f"{tolerance:.0e}. The file was not written.")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    report = ExportReport(out, config, exporter, opset, precision, tolerance, source_sha256, checks,
                          export_seconds, verify_seconds)
    log.debug(report.summary())
    return report


def verify_against_torch(model: DiffusionAttnUnet1D, onnx_path: str | Path, *, lengths: Sequence[int],
                         batches: Sequence[int] = (1, 2), seed: int = 1234) -> list[ParityCheck]:
    """Max abs difference of ONNX Runtime (CPU) against the torch model in fp32, for each batch x length."""
    from export.providers import choose_provider, create_session

    session, _ = create_session(Path(onnx_path), choose_provider("cpu"))
    reference = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    reference.channels_last = False
    checks = []
    for i, (batch, length) in enumerate((b, n) for b in batches for n in lengths):
        x, t, labels = _example_inputs(model.config, batch, length, seed + i)
        with torch.inference_mode():
            expected = reference(x, t, labels).numpy()
        feeds = {"x": x.numpy(), "t": t.numpy()}
        if labels is not None:
            feeds["labels"] = labels.numpy()
        got = session.run([OUTPUT_NAME], feeds)[0]
        diff = float(np.abs(got.astype(np.float64) - expected).max())
        checks.append(ParityCheck(batch, length, diff, float(np.abs(expected).max())))
        log.debug("parity batch %d length %d: max abs diff %.3e", batch, length, diff)
    return checks


# --- from files --------------------------------------------------------------------------------------


def default_onnx_path(precision: str = "fp32") -> Path:
    from models.registry import DEFAULT_ONNX

    return DEFAULT_ONNX if precision == "fp32" else DEFAULT_ONNX.with_name(f"{DEFAULT_ONNX.stem}-{precision}.onnx")


def resolve_source(model: str | Path | None) -> Path:
    """The weights file to export: ``default`` is the shipped .safetensors (never the .onnx)."""
    from models.registry import DEFAULT_MODEL, resolve_model

    if model is None or str(model) == "default":
        if not DEFAULT_MODEL.is_file():
            raise CheckpointError(f"the default model's weights '{DEFAULT_MODEL}' do not exist yet; train or "
                                  "restore them first (only the weights can be exported, not the .onnx)")
        return DEFAULT_MODEL
    path = resolve_model(model)
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"model '{path.name}' is already ONNX; export needs torch weights "
                          "(.safetensors, .ckpt, .pt, .pth or a diffusers folder)")
    return path


def export_model_file(model: str | Path | None, out: str | Path | None = None, *, sample_rate: int | None = None,
                      precision: str = "fp32", opset: int = DEFAULT_OPSET, exporter: str = "auto",
                      tolerance: float | None = None) -> ExportReport:
    """Load weights (any supported format, ``default`` for the shipped model) and :func:`export_onnx` them.

    ``out`` defaults to ``models/default/dd-default.onnx`` for the default model, else ``<stem>.onnx`` in
    the current folder (``-fp16`` added for fp16).
    """
    source = resolve_source(model)
    weights: LoadedWeights = load_weights(source, sample_rate=sample_rate)
    if out is None:
        is_default = model is None or str(model) == "default"
        suffix = "" if precision == "fp32" else f"-{precision}"
        out = default_onnx_path(precision) if is_default else Path(f"{source.stem}{suffix}.onnx")
    return export_onnx(build_model(weights), out, source_sha256=weights.sha256, precision=precision, opset=opset,
                       exporter=exporter, tolerance=tolerance)


def export_default_model(precision: str = "fp32") -> ExportReport:
    """Export the shipped default model next to its weights (``models/default/dd-default.onnx``)."""
    return export_model_file("default", default_onnx_path(precision), precision=precision)

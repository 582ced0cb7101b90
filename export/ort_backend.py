"""The ONNX Runtime backend: a model exported by ``dd-companion export`` behind the denoiser contract.

Needs only NumPy and onnxruntime (no torch, no onnx package), so the light install can generate,
serve and write samples. The model's config, name and source-weights hash come from the ONNX
metadata written at export; a file without it is refused with a message saying how to make one.

Sound parity: the same seed and settings give the same audio through torch and through this backend
within 1e-4 max abs for fp32 exports. Every export is verified per forward to 1e-4 (measured: 7.6e-6 on
the full 221M network, 2.7e-6 on the default model); whole generations of tiny networks differ by at
most 1.3e-6 over four samplers (tests/test_ort_backend.py holds them to 1e-5).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from export.providers import ProviderChoice, choose_provider, create_session
from models.backend import Denoiser, check_labels, describe_common
from models.config import ModelConfig
from models.errors import CheckpointError, ConfigError, DDError, LengthError
from models.known_models import file_sha256

log = logging.getLogger("dd.export")

FORMAT_TAG = "dd-companion"  # same tag as export.onnx_export (not imported: that module needs torch)
SUPPORTED_FORMAT_VERSIONS = ("1",)
PRECISIONS = ("auto", "fp32", "fp16")
_STATE = ort.capi.onnxruntime_pybind11_state
# what ORT raises for unreadable, foreign or corrupt files (its exceptions do not share a useful base)
LOAD_ERRORS = (_STATE.Fail, _STATE.InvalidProtobuf, _STATE.InvalidGraph, _STATE.NoSuchFile, _STATE.InvalidArgument,
               _STATE.RuntimeException, _STATE.EPFail, RuntimeError)


def _open_session(path: Path, choice: ProviderChoice, threads: int | None) -> tuple[ort.InferenceSession, ProviderChoice]:
    if not path.is_file():
        raise CheckpointError(f"ONNX model '{path}' does not exist")
    try:
        return create_session(path, choice, threads)
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"'{path.name}' is not a loadable ONNX model: {exc}") from None


def config_from_metadata(metadata: dict[str, str], origin: str) -> ModelConfig:
    """The :class:`ModelConfig` stored by the exporter; a clear error for foreign or newer files."""
    if metadata.get("format") != FORMAT_TAG or "config" not in metadata:
        raise CheckpointError(
            f"'{origin}' has no dd-companion metadata (format={metadata.get('format')!r}); make the file with "
            "'dd-companion export --model WEIGHTS --out MODEL.onnx'")
    version = metadata.get("format_version", "")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise CheckpointError(f"'{origin}' has format_version {version!r}; this version reads "
                              f"{list(SUPPORTED_FORMAT_VERSIONS)} (update dd-companion)")
    try:
        return ModelConfig.from_json(metadata["config"])
    except DDError as exc:
        raise CheckpointError(f"'{origin}' carries an invalid model config: {exc}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX model (via a CPU session without graph optimisation)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model '{path}' does not exist")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"'{path.name}' is not a loadable ONNX model: {exc}") from None
    return dict(session.get_modelmeta().custom_metadata_map)


class OrtBackend:
    """A resident ONNX Runtime session behind the denoiser contract."""

    kind = "onnxruntime"

    def __init__(self, session: ort.InferenceSession, config: ModelConfig, *, source: str, model_hash: str,
                 provider: ProviderChoice, metadata: dict[str, str] | None = None) -> None:
        self.session = session
        self.config = config
        self.source = source
        self.model_hash = model_hash
        self.provider = provider
        self.device = provider.device
        self.metadata = dict(metadata or {})
        self._check_io()

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", precision: str = "auto",
             threads: int | None = None) -> OrtBackend:
        """Open an exported model; ``device`` is auto, cpu, cuda[:N], directml, coreml (or mps).

        The precision is the file's own (fp32 or fp16, fixed at export); ``precision`` other than
        ``auto`` must match it.
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)} for ONNX Runtime, got '{precision}'")
        path = Path(path).expanduser()
        session, choice = _open_session(path, choose_provider(device), threads)
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        config = config_from_metadata(metadata, path.name)
        stored = metadata.get("precision", "fp32")
        if precision != "auto" and precision != stored:
            raise ConfigError(f"'{path.name}' was exported in {stored}; precision '{precision}' needs a file exported "
                              f"as {precision} (dd-companion export{' --fp16' if precision == 'fp16' else ''})")
        model_hash = metadata.get("source_sha256") or file_sha256(path)
        return cls(session, config, source=str(path), model_hash=model_hash, provider=choice, metadata=metadata)

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        want = {"x": "tensor(float)", "t": "tensor(float)"}
        if self.config.categories:
            want["labels"] = "tensor(int64)"
        got = {name: i.type for name, i in inputs.items()}
        if got != want:
            raise CheckpointError(f"'{Path(self.source).name}' has inputs {got}; a dd-companion model with "
                                  f"{'categories' if self.config.categories else 'no categories'} needs {want}")
        channels = inputs["x"].shape[1]
        if isinstance(channels, int) and channels != self.config.channels:
            raise CheckpointError(f"'{Path(self.source).name}' takes {channels} audio channels but its config "
                                  f"says {self.config.channels}")

    def denoiser(self, labels: np.ndarray | None) -> Denoiser:
        """Bind category labels (or None for unconditional models) into a NumPy denoiser."""
        config = self.config
        label_array = check_labels(config, labels)
        session = self.session

        def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if x.ndim != 3 or x.shape[1] != config.channels:
                raise ConfigError(f"x must be [batch, {config.channels}, length], got shape {x.shape}")
            n, length = x.shape[0], x.shape[2]
            if length % config.factor or length < config.min_length:
                raise LengthError(f"length must be a multiple of {config.factor} and at least {config.min_length} "
                                  f"for model '{config.name}', got {length} (pad with config.padded_length)")
            t = np.ascontiguousarray(np.broadcast_to(np.asarray(t, dtype=np.float32), (n,)))
            feeds = {"x": x, "t": t}
            if label_array is not None:
                if label_array.ndim == 1 and len(label_array) not in (1, n):
                    raise ConfigError(f"got {len(label_array)} labels for a batch of {n}")
                feeds["labels"] = np.ascontiguousarray(np.broadcast_to(label_array, (n,)))
            return session.run(["v"], feeds)[0]

        return denoise

    def describe(self) -> dict[str, Any]:
        return {
            **describe_common(self),
            "provider": self.provider.provider,
            "provider_note": self.provider.note,
            "precision": self.metadata.get("precision", "fp32"),
            "threads": self.session.get_session_options().intra_op_num_threads,
        }

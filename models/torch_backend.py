"""The torch runtime: CPU, CUDA or MPS, fp32/fp16/bf16, inference mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.backend import Denoiser, check_labels, describe_common
from models.checkpoints import LoadedWeights, build_model, load_weights
from models.config import ModelConfig
from models.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(device: str = "auto") -> torch.device:
    """The requested device, or the best available one for ``auto``; unavailable ones are a clear error."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(f"device must be one of {list(DEVICES)} or cuda:N, got '{device}'")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use 'cpu' or 'auto'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but Apple's MPS is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp16 on GPUs by default; fp32 on the CPU, where bf16 without AMX is slower and less precise."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got '{precision}'")
    chosen = PRECISIONS[precision]
    if chosen is None:
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if chosen == torch.float16 and device.type == "cpu":
        raise ConfigError("precision 'fp16' is not supported on the CPU; use 'fp32' (default) or 'bf16'")
    return chosen


class TorchBackend:
    """A resident torch network behind the denoiser contract."""

    kind = "torch"

    def __init__(self, model: torch.nn.Module, weights: LoadedWeights | None, device: torch.device,
                 dtype: torch.dtype, source: str, model_hash: str) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        # channels-last 4-D layout is the fast path for oneDNN on the CPU only
        self.model.channels_last = device.type == "cpu"
        self.config: ModelConfig = model.config
        self.weights = weights
        self.torch_device = device
        self.dtype = dtype
        self.device = str(device)
        self.source = source
        self.model_hash = model_hash

    @classmethod
    def load(cls, path: Path, *, device: str = "auto", precision: str = "auto", **overrides: Any) -> TorchBackend:
        weights = load_weights(path, **{k: v for k, v in overrides.items() if v is not None})
        model = build_model(weights)
        dev = pick_device(device)
        return cls(model, weights, dev, pick_dtype(precision, dev), str(path), weights.sha256)

    def denoiser(self, labels: np.ndarray | None) -> Denoiser:
        """Bind category labels (or None for unconditional models) into a NumPy denoiser."""
        label_array = check_labels(self.config, labels)
        label_tensor = None if label_array is None else torch.as_tensor(label_array, device=self.torch_device)

        def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.torch_device, self.dtype)
                tt = torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)).to(self.torch_device)
                lab = None if label_tensor is None else label_tensor.expand(xt.shape[0]) if label_tensor.dim() == 0 \
                    else label_tensor
                v = self.model(xt, tt, lab)
                return v.float().cpu().numpy()

        return denoise

    def describe(self) -> dict[str, Any]:
        return {
            **describe_common(self),
            "precision": str(self.dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

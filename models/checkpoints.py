"""Loading and saving model weights in the three supported formats, strictly and safely.

1. Harmonai's original PyTorch Lightning ``.ckpt`` (``state_dict`` with ``diffusion_ema.*`` used for
   inference and ``diffusion.*`` ignored); the architecture is read off the weight shapes and the audio
   format comes from the caller or the table of public checkpoints.
2. The diffusers layout: a folder with ``unet/config.json`` (or ``config.json``) and
   ``diffusion_pytorch_model.safetensors`` or ``.bin``.
3. The project's own format: one ``.safetensors`` file whose metadata holds the :class:`ModelConfig`.

Pickles are only ever read with ``torch.load(weights_only=True)``: a file that asks for anything but
tensors and plain containers is refused, never executed.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.config import TIME_FEATURES, ModelConfig
from models.errors import CheckpointError, UnsafeCheckpointError
from models.keymap import _level_prefix, config_from_diffusers, diffusers_to_original
from models.known_models import file_sha256, recognise
from models.network import DiffusionAttnUnet1D

FORMAT_TAG = "dd-companion"
FORMAT_VERSION = "1"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class LoadedWeights:
    """Weights in original key naming plus everything known about where they came from."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    source: Path
    format: str  # "harmonai-ckpt" | "diffusers" | "dd-companion"
    sha256: str


def detect_format(path: Path) -> str:
    """Name the format of a model path, or raise a CheckpointError saying what was found."""
    if not path.exists():
        raise CheckpointError(f"model path '{path}' does not exist")
    if path.is_dir():
        if _diffusers_unet_dir(path) is not None:
            return "diffusers"
        raise CheckpointError(
            f"folder '{path}' is not a diffusers model: expected unet/config.json with "
            "diffusion_pytorch_model.safetensors or .bin"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "dd-companion"
    if suffix in PICKLE_SUFFIXES:
        return "harmonai-ckpt"
    raise CheckpointError(
        f"model file '{path.name}' has suffix '{suffix}'; allowed: .safetensors (dd-companion), "
        f"{', '.join(PICKLE_SUFFIXES)} (Harmonai checkpoint) or a diffusers folder"
    )


def load_weights(
    path: str | Path, *, sample_rate: int | None = None, sample_size: int | None = None, name: str | None = None
) -> LoadedWeights:
    """Read any supported model into original-layout weights and a config (nothing is built yet)."""
    path = Path(path).expanduser()
    fmt = detect_format(path)
    if fmt == "diffusers":
        unet_dir = _diffusers_unet_dir(path)
        assert unet_dir is not None  # detect_format checked it
        config, state, weights_file = _read_diffusers(unet_dir, name or path.name)
        sha = file_sha256(weights_file)
    elif fmt == "dd-companion":
        config, state = _read_own(path)
        sha = file_sha256(path)
    else:
        sha = file_sha256(path)
        config, state = _read_harmonai(path, sha, name)
    overrides: dict[str, Any] = {}
    if sample_rate is not None:
        overrides["sample_rate"] = int(sample_rate)
    if sample_size is not None:
        overrides["sample_size"] = int(sample_size)
    if name is not None:
        overrides["name"] = name
    if overrides:
        config = replace(config, **overrides)
    return LoadedWeights(config=config, state=state, source=path, format=fmt, sha256=sha)


def build_model(weights: LoadedWeights) -> DiffusionAttnUnet1D:
    """Create the network for ``weights.config`` and load the weights strictly."""
    model = DiffusionAttnUnet1D(weights.config)
    load_strict(model, weights.state, str(weights.source))
    return model.eval()


def load_model(path: str | Path, **kwargs: Any) -> tuple[DiffusionAttnUnet1D, LoadedWeights]:
    weights = load_weights(path, **kwargs)
    return build_model(weights), weights


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Copy ``state`` into ``model``; any missing, unexpected or misshapen key is an error naming it.

    The fixed resampling ``kernel`` buffers may be absent (they are constants); when present they must
    equal the network's own.
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(".kernel"))
    unexpected = sorted(k for k in state if k not in own)
    misshapen = sorted(
        f"{k} {tuple(state[k].shape)} (network has {tuple(own[k].shape)})"
        for k in state
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_some(unexpected)}")
    if misshapen:
        problems.append(f"misshapen {len(misshapen)} keys: {_some(misshapen)}")
    bad_kernels = [
        k for k in state
        if k.endswith(".kernel") and k in own and state[k].shape == own[k].shape
        and not torch.allclose(state[k].float(), own[k].float())
    ]
    if bad_kernels:
        problems.append(f"resampling kernels differ from the cubic kernel: {_some(bad_kernels)}")
    if problems:
        raise CheckpointError(f"weights in '{origin}' do not fit model '{model.config.name}': " + "; ".join(problems))
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))


def _some(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", … ({len(keys) - n} more)" if len(keys) > n else "")


# --- the three readers ----------------------------------------------------------------------------


SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.core.multiarray._reconstruct",
                        "numpy._core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray", "builtins.set")


def pickle_globals(path: Path) -> list[str]:
    """Every module-level name a pickle (plain or inside a torch zip) would import, read without running it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(member) if member else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile):
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a corrupt stream simply ends the scan; we only report what was seen
        pass
    return names


def safe_torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; refusals and corrupt files become clear errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = [n for n in pickle_globals(path) if not n.startswith(SAFE_GLOBAL_PREFIXES)]
        if unsafe or "unsupported global" in str(exc).lower():
            what = f" ({', '.join(sorted(set(unsafe))[:3])})" if unsafe else ""
            raise UnsafeCheckpointError(
                f"refused to load '{path.name}': it asks to import or call code{what}, which a weights file "
                "never needs. Only tensors and plain containers are allowed; the file was not executed."
            ) from None
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = lines[-2][:200] if len(lines) >= 2 else "unpickling failed"
        raise CheckpointError(f"'{path.name}' is not a readable checkpoint (corrupt or truncated?): {detail}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"'{path.name}' is not a readable checkpoint (corrupt or truncated?): {exc}") from None


def _read_harmonai(path: Path, sha: str, name: str | None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    data = safe_torch_load(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path.name}' holds a {type(data).__name__}, not a checkpoint dictionary")
    state = data.get("state_dict", data)
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path.name}' has a 'state_dict' that is a {type(state).__name__}, not a dictionary")
    prefix = "diffusion_ema."
    ema = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    if not ema:
        if any(isinstance(k, str) and k.startswith("net.") for k in state):
            ema = dict(state)  # a bare network state dict (e.g. an EMA-only export by another tool)
        else:
            raise CheckpointError(
                f"'{path.name}' has no 'diffusion_ema.*' weights; found keys like {_some(sorted(map(str, state)), 3)}"
            )
    bad = [k for k, v in ema.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"'{path.name}' has non-tensor entries under diffusion_ema: {_some(bad)}")
    known = recognise(path, sha)
    config = infer_original_config(ema, name or (known.name if known else path.stem))
    if known:
        config = replace(config, sample_rate=known.sample_rate, sample_size=known.sample_size,
                         notes=f"Harmonai {known.name}, trained on {known.trained_on}")
    return config, {k: v.float() for k, v in ema.items()}


def infer_original_config(state: dict[str, torch.Tensor], name: str) -> ModelConfig:
    """Read depth, channels and attention levels off an original-layout state dict."""
    try:
        c_mults = [int(state["net.0.main.0.weight"].shape[0])]
        io = int(state["net.6.main.3.weight"].shape[0])
        in_ch = int(state["net.0.main.0.weight"].shape[1])
    except KeyError as exc:
        raise CheckpointError(f"weights lack the first level of a Dance Diffusion network: {exc}") from None
    level, first_attn = 2, None
    while f"{_level_prefix(level)}main.1.main.0.weight" in state:
        prefix = _level_prefix(level)
        c_mults.append(int(state[f"{prefix}main.1.main.0.weight"].shape[0]))
        if first_attn is None and f"{prefix}main.2.qkv_proj.weight" in state:
            first_attn = level
        level += 1
    depth = len(c_mults)
    n_categories = int(state["class_embed.weight"].shape[0]) if "class_embed.weight" in state else 0
    if in_ch != io + TIME_FEATURES + (16 if n_categories else 0):
        raise CheckpointError(
            f"first convolution takes {in_ch} channels; expected {io} audio + {TIME_FEATURES} time features"
            " (latent-conditioned models are not supported)"
        )
    n_attn = 0 if first_attn is None else depth - first_attn - 1
    return ModelConfig(
        name=name,
        channels=io,
        depth=depth,
        c_mults=tuple(c_mults),
        n_attn_layers=n_attn,
        sample_size=max(65536, 3 * 2 ** (depth - 1)) // 2 ** (depth - 1) * 2 ** (depth - 1),
        categories=tuple(f"class_{i}" for i in range(n_categories)),
    )


def _diffusers_unet_dir(path: Path) -> Path | None:
    for candidate in (path / "unet", path):
        if (candidate / "config.json").is_file() and any(
            (candidate / f"diffusion_pytorch_model.{ext}").is_file() for ext in ("safetensors", "bin")
        ):
            return candidate
    return None


def _read_diffusers(unet_dir: Path, name: str) -> tuple[ModelConfig, dict[str, torch.Tensor], Path]:
    try:
        unet_config = json.loads((unet_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read '{unet_dir / 'config.json'}': {exc}") from None
    config = config_from_diffusers(unet_config, name)
    st_file = unet_dir / "diffusion_pytorch_model.safetensors"
    if st_file.is_file():
        try:
            state = load_file(st_file)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"'{st_file}' is not a readable safetensors file: {exc}") from None
        weights_file = st_file
    else:
        weights_file = unet_dir / "diffusion_pytorch_model.bin"
        state = safe_torch_load(weights_file)
        if not isinstance(state, dict):
            raise CheckpointError(f"'{weights_file}' holds a {type(state).__name__}, not a state dict")
    return config, diffusers_to_original({k: v.float() for k, v in state.items()}, config), weights_file


def _read_own(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"'{path.name}' is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != FORMAT_TAG or "config" not in metadata:
        raise CheckpointError(
            f"'{path.name}' is a safetensors file without dd-companion metadata (format={metadata.get('format')!r}); "
            "diffusers weights must sit in their folder with config.json"
        )
    config = ModelConfig.from_json(metadata["config"])
    return config, {k: v.float() for k, v in state.items()}


def read_own_metadata(path: Path) -> dict[str, str]:
    """The metadata of a model in the project's format, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors file: {exc}") from None


def save_model(model: DiffusionAttnUnet1D, path: str | Path, *, half: bool = False, extra: dict[str, str] | None = None) -> Path:
    """Write the network in the project's format (weights, config in metadata); ``half`` stores fp16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items() if not k.endswith(".kernel")}
    metadata = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "config": model.config.to_json(),
                "dtype": "float16" if half else "float32"}
    metadata.update(extra or {})
    tmp = path.with_name(f".{path.name}.partial")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # a model file is shared read-only data, whatever the temporary's mode was
    tmp.replace(path)
    return path

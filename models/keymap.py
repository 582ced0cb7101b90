"""Key mapping between the original sample-generator layout and diffusers' ``UNet1DModel`` layout.

Original keys (what :class:`models.network.DiffusionAttnUnet1D` uses) nest each level inside the
previous one (``net.3.main.7.main.7…``); diffusers flattens them into ``down_blocks``, ``mid_block``
and ``up_blocks``, and splits each attention's fused ``qkv_proj`` into ``query``/``key``/``value``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from models.config import ModelConfig
from models.errors import CheckpointError

_RC_PARTS = {"main.0": "conv_1", "main.1": "group_norm_1", "main.3": "conv_2", "main.4": "group_norm_2", "skip": "conv_skip"}


def _level_prefix(level: int) -> str:
    """Original prefix of the SkipBlock that holds ``level`` (2..depth)."""
    return "net.3." + "main.7." * (level - 2)


def _module_pairs(config: ModelConfig) -> Iterator[tuple[str, str, str]]:
    """Yield (original prefix, diffusers prefix, kind) for every resnet and attention module."""
    depth = config.depth
    for j, orig in enumerate(("net.0", "net.1", "net.2")):
        yield orig, f"down_blocks.0.resnets.{j}", "rc"
    for j, orig in enumerate(("net.4", "net.5", "net.6")):
        yield orig, f"up_blocks.{depth - 2}.resnets.{j}", "rc"
    for level in range(2, depth + 1):
        prefix = _level_prefix(level)
        attn = level >= config.first_attn_level
        if level == depth:
            slots = [(i, "mid_block", k) for k, i in enumerate((1, 3, 5, 8, 10, 12))]
            att_slots = [(i, "mid_block", k) for k, i in enumerate((2, 4, 6, 9, 11, 13))]
        else:
            down, up = f"down_blocks.{level - 1}", f"up_blocks.{depth - 1 - level}"
            slots = [(i, down, k) for k, i in enumerate((1, 3, 5))] + [(i, up, k) for k, i in enumerate((8, 10, 12))]
            att_slots = [(i, down, k) for k, i in enumerate((2, 4, 6))] + [(i, up, k) for k, i in enumerate((9, 11, 13))]
        for i, block, k in slots:
            yield f"{prefix}main.{i}", f"{block}.resnets.{k}", "rc"
        if attn:
            for i, block, k in att_slots:
                yield f"{prefix}main.{i}", f"{block}.attentions.{k}", "attn"


def diffusers_to_original(state: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``UNet1DModel`` state dict to original keys (``kernel`` buffers are not included)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"diffusers weights are missing key '{key}' required by config '{config.name}'")
        used.add(key)
        return state[key]

    weight = take("time_proj.weight")
    out["timestep_embed.weight"] = weight.reshape(-1, 1)
    for orig, diff, kind in _module_pairs(config):
        if kind == "rc":
            for o_part, d_part in _RC_PARTS.items():
                for suffix in ("weight", "bias"):
                    key = f"{diff}.{d_part}.{suffix}"
                    if key in state:
                        out[f"{orig}.{o_part}.{suffix}"] = take(key)
        else:
            out[f"{orig}.norm.weight"] = take(f"{diff}.group_norm.weight")
            out[f"{orig}.norm.bias"] = take(f"{diff}.group_norm.bias")
            for suffix in ("weight", "bias"):
                parts = [take(f"{diff}.{name}.{suffix}") for name in ("query", "key", "value")]
                fused = torch.cat(parts, dim=0)
                out[f"{orig}.qkv_proj.{suffix}"] = fused[..., None] if suffix == "weight" else fused
            out[f"{orig}.out_proj.weight"] = take(f"{diff}.proj_attn.weight")[..., None]
            out[f"{orig}.out_proj.bias"] = take(f"{diff}.proj_attn.bias")
    unexpected = sorted(k for k in set(state) - used if not k.endswith(".kernel"))
    if unexpected:
        raise CheckpointError(
            f"diffusers weights have {len(unexpected)} keys this layout does not use: {_sample(unexpected)}"
        )
    return out


def _sample(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … ({len(keys) - n} more)" if len(keys) > n else "")


def config_from_diffusers(unet_config: Mapping[str, object], name: str) -> ModelConfig:
    """Translate a diffusers ``unet/config.json`` (Dance Diffusion layout) into a :class:`ModelConfig`."""
    try:
        channels = [int(c) for c in unet_config["block_out_channels"]]  # type: ignore[union-attr]
        down_types = list(unet_config["down_block_types"])  # type: ignore[call-overload]
        extra = int(unet_config.get("extra_in_channels", 0))  # type: ignore[call-overload]
        io = int(unet_config.get("in_channels", 2))  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"diffusers unet config lacks a usable field: {exc}") from exc
    if unet_config.get("time_embedding_type", "fourier") != "fourier" or unet_config.get("use_timestep_embedding"):
        raise CheckpointError("only the Dance Diffusion diffusers layout is supported (fourier time features, no time MLP)")
    if extra != 16 or down_types[0] != "DownBlock1DNoSkip":
        raise CheckpointError(
            f"not a Dance Diffusion unet: expected extra_in_channels=16 and DownBlock1DNoSkip first, "
            f"got extra_in_channels={extra}, first block {down_types[0]!r}"
        )
    depth = len(channels) + 1
    attn = [i for i, t in enumerate(down_types) if t.startswith("Attn")]
    n_attn_layers = depth - ((attn[0] + 1) if attn else depth) - 1
    if n_attn_layers < 1:
        raise CheckpointError(
            f"attention on only {len(attn)} down blocks cannot be expressed in the original layout; "
            f"Dance Diffusion puts it on at least the two innermost down blocks"
        )
    return ModelConfig(
        name=name,
        sample_rate=int(unet_config.get("sample_rate") or 48000),  # type: ignore[call-overload]
        sample_size=int(unet_config.get("sample_size") or 65536),  # type: ignore[call-overload]
        channels=io,
        depth=depth,
        c_mults=tuple(channels) + (channels[-1],),
        n_attn_layers=n_attn_layers,
    )

"""Dance Diffusion's ``DiffusionAttnUnet1D``, re-implemented with the original module layout.

Module names follow Harmonai's sample-generator so that an original ``state_dict`` (minus the
``diffusion_ema.`` prefix) loads key for key. Two things differ from the original, neither changes
the output: the fixed cubic resampling kernels run as depthwise convolutions instead of dense
C x C convolutions with only the diagonal set (about 11% of the FLOPs of the full network), and
attention uses ``scaled_dot_product_attention``.

One addition, off for every Harmonai checkpoint: ``config.patch`` = p > 1 folds each run of p samples
into p channels before the first level and unfolds the output the same way (a 1-D pixel shuffle). The
U-Net then runs on 1/p of the positions with wider channels (tried for the default model, which does
not use it).

Two more, also off for Harmonai checkpoints and on for the project's default model:

- ``config.level_cond``: the original network sees the diffusion time (and here the category) only as
  planes concatenated to its input, so everything the inner levels know of them has squeezed through the
  first level's few channels. With ``level_cond`` the time features and the category embedding also go
  through a small shared MLP (``cond_mlp``) and a per-level linear map (``level_cond.<i>``) to a
  per-channel offset added right after each level's down-sampling. Those maps start at zero, so adding
  them to a trained network changes nothing until training moves them; the trunk's keys stay the same.
- category -1 means "no category" (its embedding is all zeros): a model trained with label dropout learns
  the unconditional sound of its data too, which classifier-free guidance needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.config import CLASS_FEATURES, COND_FEATURES, TIME_FEATURES, ModelConfig

CUBIC_KERNEL = (-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875)


class Conv(nn.Conv1d):
    """A 1-D convolution (same parameters and keys as ``nn.Conv1d``) that also runs on 4-D input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            pad = self.padding[0]
            return F.conv2d(x, self.weight[:, :, None, :], self.bias, padding=(0, pad))
        return super().forward(x)


def _pad_time(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the time axis of a 3-D or channels-last 4-D tensor, keeping its memory layout."""
    if x.dim() == 4:
        return F.pad(x, (left, right, 0, 0), mode="reflect").contiguous(memory_format=torch.channels_last)
    return F.pad(x, (left, right), mode="reflect")


class ResConvBlock(nn.Module):
    """Two 5-tap convolutions with GroupNorm(1) and GELU, plus a (1x1 when needed) skip."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, is_last: bool = False) -> None:
        super().__init__()
        self.main = nn.Sequential(
            Conv(c_in, c_mid, 5, padding=2),
            nn.GroupNorm(1, c_mid),
            nn.GELU(),
            Conv(c_mid, c_out, 5, padding=2),
            nn.Identity() if is_last else nn.GroupNorm(1, c_out),
            nn.Identity() if is_last else nn.GELU(),
        )
        self.skip = nn.Identity() if c_in == c_out else Conv(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class SelfAttention1d(nn.Module):
    """Global multi-head self-attention over time, head size 32, residual."""

    def __init__(self, channels: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.norm = nn.GroupNorm(1, channels)
        self.qkv_proj = Conv(channels, channels * 3, 1)
        self.out_proj = Conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        length = x.shape[-1]
        qkv = self.qkv_proj(self.norm(x))
        if x.dim() == 4:  # channels-last memory is [n, length, 3c]: view it so, without copying
            heads = qkv.permute(0, 2, 3, 1).reshape(n, length, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        else:
            heads = qkv.view(n, 3, self.n_head, c // self.n_head, length).transpose(3, 4).transpose(0, 1)
        q, k, v = heads.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # scale d^-1/2, same as the original's d^-1/4 on q and k
        if x.dim() == 4:
            y = y.permute(0, 2, 1, 3).reshape(n, 1, length, c).permute(0, 3, 1, 2)
        else:
            y = y.transpose(2, 3).reshape(n, c, length)
        return x + self.out_proj(y)


class Downsample1d(nn.Module):
    """Stride-2 cubic low-pass with reflect padding, per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.tensor(CUBIC_KERNEL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = _pad_time(x, 3, 3)
        weight = self.kernel.to(x.dtype).expand(c, 1, -1)
        if x.dim() == 4:
            return F.conv2d(x, weight[:, :, None, :], stride=(1, 2), groups=c)
        return F.conv1d(x, weight, stride=2, groups=c)


class Upsample1d(nn.Module):
    """Stride-2 transposed cubic interpolation with reflect padding, per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.tensor(CUBIC_KERNEL) * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = _pad_time(x, 2, 2)
        weight = self.kernel.to(x.dtype).expand(c, 1, -1)
        if x.dim() == 4:
            return F.conv_transpose2d(x, weight[:, :, None, :], stride=(1, 2), padding=(0, 7), groups=c)
        return F.conv_transpose1d(x, weight, stride=2, padding=7, groups=c)


class SkipBlock(nn.Module):
    """Runs ``main`` and concatenates its output with its input along channels."""

    def __init__(self, *main: nn.Module) -> None:
        super().__init__()
        self.main = nn.Sequential(*main)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.main(x), x], dim=1)


class FourierFeatures(nn.Module):
    """Trainable random Fourier features of the diffusion time: [cos 2πtw, sin 2πtw]."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, 1))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * t[:, None] @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


def _attention_or_identity(channels: int, enabled: bool) -> nn.Module:
    return SelfAttention1d(channels, channels // 32) if enabled else nn.Identity()


class DiffusionAttnUnet1D(nn.Module):
    """The Dance Diffusion U-Net: ``forward(x, t, labels=None) -> v``.

    ``x`` is ``[batch, channels, length]`` with length a multiple of ``config.factor``; ``t`` is the
    continuous v-diffusion time ``[batch]``; ``labels`` are category indices ``[batch]`` when the model
    was trained with categories (the project's own models), and must be absent otherwise.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.timestep_embed = FourierFeatures(TIME_FEATURES)
        if config.categories:
            self.class_embed = nn.Embedding(len(config.categories), CLASS_FEATURES)
        if config.level_cond:
            cond_in = TIME_FEATURES + (CLASS_FEATURES if config.categories else 0)
            self.cond_mlp = nn.Sequential(nn.Linear(cond_in, COND_FEATURES), nn.GELU())
            # level i (2..depth) starts with a down-sampling of c_mults[i - 2] channels
            self.level_cond = nn.ModuleList(nn.Linear(COND_FEATURES, c) for c in config.c_mults[:-1])
            for proj in self.level_cond:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
        depth, c_mults, io = config.depth, config.c_mults, config.io_channels
        block: nn.Module = nn.Identity()
        for i in range(depth, 0, -1):
            c = c_mults[i - 1]
            if i > 1:
                c_prev = c_mults[i - 2]
                attn = i >= config.first_attn_level
                block = SkipBlock(
                    Downsample1d(),
                    ResConvBlock(c_prev, c, c),
                    _attention_or_identity(c, attn),
                    ResConvBlock(c, c, c),
                    _attention_or_identity(c, attn),
                    ResConvBlock(c, c, c),
                    _attention_or_identity(c, attn),
                    block,
                    ResConvBlock(c * 2 if i != depth else c, c, c),
                    _attention_or_identity(c, attn),
                    ResConvBlock(c, c, c),
                    _attention_or_identity(c, attn),
                    ResConvBlock(c, c, c_prev),
                    _attention_or_identity(c_prev, attn),
                    Upsample1d(),
                )
            else:
                block = nn.Sequential(
                    ResConvBlock(config.in_channels, c, c),
                    ResConvBlock(c, c, c),
                    ResConvBlock(c, c, c),
                    block,
                    ResConvBlock(c * 2, c, c),
                    ResConvBlock(c, c, c),
                    ResConvBlock(c, c, io, is_last=True),
                )
        self.net = block
        self.channels_last = True  # see the module docstring; False runs plain 1-D tensors
        with torch.no_grad():  # the original scales the initial weights of the trunk by one half
            for p in self.net.parameters():
                p.mul_(0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        patch = self.config.patch
        if patch == 1:
            return self._unet(x, t, labels)
        n, c, length = x.shape  # fold every run of `patch` samples into channels, and back
        folded = x.reshape(n, c, length // patch, patch).transpose(2, 3).reshape(n, c * patch, length // patch)
        out = self._unet(folded, t, labels)
        return out.reshape(n, c, patch, length // patch).transpose(2, 3).reshape(n, c, length)

    def _unet(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        n, _, length = x.shape
        time = self.timestep_embed(t.to(x.dtype)).to(x.dtype)
        features = [time]
        if self.config.categories:
            if labels is None:
                raise ValueError(f"model '{self.config.name}' has categories and needs labels")
            labels = labels.long()
            # category -1: no category (zero embedding), for classifier-free guidance
            present = (labels >= 0).to(x.dtype)[:, None]
            features.append(self.class_embed(labels.clamp(min=0)).to(x.dtype) * present)
        elif labels is not None:
            raise ValueError(f"model '{self.config.name}' is unconditional and takes no labels")
        if self.channels_last:  # written straight into channels-last memory: a cat then a layout copy cost 4x more
            planes = torch.cat(features, dim=1)
            h = x.new_empty((n, 1, length, x.shape[1] + planes.shape[1]))
            h[..., : x.shape[1]] = x.transpose(1, 2)[:, None]
            h[..., x.shape[1]:] = planes[:, None, None, :]
            h = h.permute(0, 3, 1, 2)  # [n, channels, 1, length], channels-last
        else:
            h = torch.cat([x] + [f[:, :, None].expand(n, -1, length) for f in features], dim=1)
        if self.config.level_cond:
            cond = self.cond_mlp(torch.cat(features, dim=1))
            shape = (n, -1, 1, 1) if self.channels_last else (n, -1, 1)
            offsets = [proj(cond).view(shape) for proj in self.level_cond]
            out = _run_levels(self.net, h, offsets, 0)
        else:
            out = self.net(h)
        return out[:, :, 0, :].contiguous() if self.channels_last else out


def _run_levels(seq: nn.Sequential, h: torch.Tensor, offsets: list[torch.Tensor], level: int) -> torch.Tensor:
    """``seq``'s forward with ``offsets[level - 1]`` added after the down-sampling that opens level ``level``
    (0 is the outermost sequence, which has none); the inner levels recurse through the skip blocks."""
    for index, module in enumerate(seq):
        if isinstance(module, SkipBlock):
            h = torch.cat([_run_levels(module.main, h, offsets, level + 1), h], dim=1)
        else:
            h = module(h)
            if level and index == 0:  # every inner level opens with its down-sampling (whatever its class)
                h = h + offsets[level - 1]
    return h


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

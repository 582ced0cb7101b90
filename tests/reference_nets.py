"""Reference networks for the compatibility tests: diffusers' UNet1DModel and a dense-resampling port."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.config import ModelConfig


def diffusers_unet(block_out_channels: tuple[int, ...], n_attn_down: int, *, sample_rate: int = 16000,
                   sample_size: int | None = None, seed: int = 0, randomize: bool = True):
    """A diffusers UNet1DModel in the Dance Diffusion layout with random weights."""
    from diffusers import UNet1DModel

    n = len(block_out_channels)
    down = ("DownBlock1DNoSkip",) + ("DownBlock1D",) * (n - 1 - n_attn_down) + ("AttnDownBlock1D",) * n_attn_down
    up = ("AttnUpBlock1D",) * n_attn_down + ("UpBlock1D",) * (n - 1 - n_attn_down) + ("UpBlock1DNoSkip",)
    torch.manual_seed(seed)
    unet = UNet1DModel(
        sample_size=sample_size or 3 * 2 ** n * 2,
        sample_rate=sample_rate,
        in_channels=2,
        out_channels=2,
        extra_in_channels=16,
        time_embedding_type="fourier",
        time_embedding_dim=16,
        flip_sin_to_cos=True,
        use_timestep_embedding=False,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock1D",
        block_out_channels=block_out_channels,
    )
    if randomize:  # diffusers initialises norms to identity; randomise everything so the test sees them
        with torch.no_grad():
            for p in unet.parameters():
                p.copy_(torch.randn_like(p) * 0.2)
    return unet.eval()


def dense_resampling_forward(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Run ``model`` with the original dense C x C resampling convolutions patched in."""
    from models import network

    def down(self, x):
        x = F.pad(x, (3, 3), mode="reflect")
        w = x.new_zeros([x.shape[1], x.shape[1], 8])
        idx = torch.arange(x.shape[1])
        w[idx, idx] = self.kernel.to(w)
        return F.conv1d(x, w, stride=2)

    def up(self, x):
        x = F.pad(x, (2, 2), mode="reflect")
        w = x.new_zeros([x.shape[1], x.shape[1], 8])
        idx = torch.arange(x.shape[1])
        w[idx, idx] = self.kernel.to(w)
        return F.conv_transpose1d(x, w, stride=2, padding=7)

    saved = network.Downsample1d.forward, network.Upsample1d.forward
    network.Downsample1d.forward, network.Upsample1d.forward = down, up
    try:
        return model(x, t)
    finally:
        network.Downsample1d.forward, network.Upsample1d.forward = saved


def tiny_config(**kw) -> ModelConfig:
    base = dict(name="tiny", sample_rate=16000, sample_size=768, channels=2, depth=5,
                c_mults=(16, 32, 32, 32, 32), n_attn_layers=1)
    base.update(kw)
    return ModelConfig(**base)


def tiny_backend(seed: int = 0, **config_overrides):
    """A TorchBackend around a tiny random network (no file involved)."""
    from models.network import DiffusionAttnUnet1D
    from models.torch_backend import TorchBackend

    torch.manual_seed(seed)
    model = DiffusionAttnUnet1D(tiny_config(**config_overrides))
    return TorchBackend(model, None, torch.device("cpu"), torch.float32, "tiny random network", "0" * 64)


def save_tiny(path, categories=("kick", "snare", "clap"), name="tiny", seed=0, **config):
    """A tiny random model file (depth 4, 512 samples at 16 kHz): a few ms per step on one core. ``config``:
    further ModelConfig fields (a recommended sampler, steps or guidance...)."""
    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D

    torch.manual_seed(seed)
    config = tiny_config(name=name, categories=categories, depth=4, c_mults=(8, 16, 16, 32), n_attn_layers=0,
                         sample_size=512, **config)
    return save_model(DiffusionAttnUnet1D(config), path)


class OracleBackend:
    """A backend whose denoiser predicts the v that leads every sampler straight to one fixed sound ``target``
    (``[channels, samples]``), whatever the category; ``config``: tiny_config fields."""

    def __init__(self, target, **config) -> None:
        import numpy as np

        self.config = tiny_config(sample_size=target.shape[-1], **config)
        self.target = np.asarray(target, dtype=np.float32)

    def denoiser(self, labels):
        import numpy as np

        def denoise(x, t):
            alpha, sigma = np.cos(t * np.pi / 2)[:, None, None], np.sin(t * np.pi / 2)[:, None, None]
            eps = (x - alpha * self.target) / np.maximum(sigma, 1e-6)
            return (alpha * eps - sigma * self.target).astype(np.float32)

        return denoise

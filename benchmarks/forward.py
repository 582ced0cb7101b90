"""Forward time of our network vs diffusers' UNet1DModel with the same random weights, side by side.

    python benchmarks/forward.py                 # full 221M Harmonai layout at 65,536 samples
    python benchmarks/forward.py --small         # a small layout, for a quick look

Prints both medians, the ratio and the max abs difference of the outputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.checkpoints import load_model  # noqa: E402
from tests.reference_nets import diffusers_unet  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small layout instead of the full 221M network")
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.small:
        channels, n_attn = (32, 32, 64, 64, 128, 128, 128, 128, 128), 4
    else:
        channels, n_attn = (128, 128, 256, 256) + (512,) * 9, 5
    unet = diffusers_unet(channels, n_attn, sample_rate=48000, sample_size=args.length, randomize=False)
    with tempfile.TemporaryDirectory() as tmp:
        unet.save_pretrained(Path(tmp) / "unet")
        ours, weights = load_model(tmp)
    n_params = sum(p.numel() for p in ours.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, args.length, generator=gen)
    t = torch.rand(1, generator=gen)
    with torch.inference_mode():
        ref = unet(x, t).sample
        out = ours(x, t)
        diff = (ref - out).abs().max().item()
        # interleave the two so that machine noise hits both alike
        t_ours, t_ref = [], []
        for _ in range(args.repeats):
            t_ours.append(median_time(lambda: ours(x, t), 1))
            t_ref.append(median_time(lambda: unet(x, t), 1))
    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    print(f"network: {n_params:,} parameters, length {args.length}, batch 1, {args.threads} threads")
    print(f"diffusers UNet1DModel : {m_ref:.3f} s (median of {args.repeats})")
    print(f"dd-companion          : {m_ours:.3f} s (median of {args.repeats})")
    print(f"speed-up              : {m_ref / m_ours:.2f}x")
    print(f"max abs difference    : {diff:.2e} (output scale {ref.abs().max().item():.2f})")


if __name__ == "__main__":
    main()

"""The machine's yardstick: a 2048x2048 fp32 GEMM rate (NumPy), printed beside every speed figure.

    python -m benchmarks.gemm
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an n x n fp32 matrix product over ``repeats`` runs (after one warm-up)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


if __name__ == "__main__":
    print(f"2048x2048 fp32 GEMM: {gemm_gflops():.1f} GFLOP/s")

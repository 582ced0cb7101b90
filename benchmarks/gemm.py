"""The machine's 2048x2048 fp32 GEMM rate, to print beside every speed figure measured in the same run."""

from __future__ import annotations

import statistics
import time

import numpy as np


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of ``n x n`` float32 matrix products in NumPy (after one warm-up)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9

"""The machine's own yardstick, measured in the same run as every speed figure: machines of one kind
differ several times in speed, so a figure means something only beside this rate.

    python -m benchmarks.machine            # prints the fp32 GEMM rate and the CPU facts
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np


def gemm_gflops(n: int = 2048, threads: int | None = None, repeats: int = 5) -> float:
    """Median fp32 rate of an n x n matrix product (NumPy's BLAS), in GFLOP/s. ``threads`` is only a
    label here: set OMP/OPENBLAS_NUM_THREADS before NumPy loads to change it."""
    del threads
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def describe() -> str:
    """One line: CPU model, cores this process may use, and the thread settings in the environment."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}
    return f"{cpu}, {cores} cores" + (f", {env}" if env else "")


if __name__ == "__main__":
    print(f"machine: {describe()}")
    print(f"fp32 GEMM 2048x2048: {gemm_gflops():.1f} GFLOP/s")

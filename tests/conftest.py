"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

# Multi-threaded BLAS slows small NumPy maths by 10-25x when the CPU is shared; tests use small arrays.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny test networks gain nothing from more

"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

import pytest

# Multi-threaded BLAS slows small NumPy maths by 10-25x when the CPU is shared; tests use small arrays.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny test networks gain nothing from more
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the window tests draw real widgets, with no display


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny random model file with three categories, saved once per test module."""
    from tests.reference_nets import save_tiny

    return save_tiny(tmp_path_factory.mktemp("models") / "tiny.safetensors")

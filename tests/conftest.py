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


# ---------------------------------------------------------------- no skip hides a missing part of the set-up

OPTIONAL = "optional:"  # the only skips allowed start so: a GPU or a display server this machine need not have


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test fails unless its reason starts with ``optional:``: a missing package is a set-up
    error (``make test`` installs everything), never a quiet skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if not reason.startswith(OPTIONAL):
            report.outcome = "failed"
            report.longrepr = (f"skipped for a reason that is not optional: {reason}\n"
                               f"(install what it names; `make test` installs everything; only a GPU or a display "
                               f"may skip, with a reason starting '{OPTIONAL}')")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same rule for a whole module skipped while it is collected (``pytest.importorskip``)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if not reason.startswith(OPTIONAL):
            report.outcome = "failed"
            report.longrepr = f"{collector.nodeid} skipped for a reason that is not optional: {reason}"


def require_tool(tool: str, package: str) -> str:
    """The path of the command ``tool``; the test fails, naming the Debian package, when it is missing."""
    import shutil

    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"'{tool}' is not installed (make test installs it: apt-get install {package})")
    return path

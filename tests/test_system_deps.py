"""The set-up from nothing: the system-package step that ``make run`` and ``make test`` take first.

tools/system_deps.py runs with the system's own Python before any virtual environment exists; these tests
run it the same way (``/usr/bin/python3``), for real against dpkg, and as an unprivileged user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "system_deps.py"
sys.path.insert(0, str(SCRIPT.parent))
import system_deps  # noqa: E402

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
NO_SUCH = "dd-companion-no-such-package"


def run(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEM_PYTHON, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          user=user, cwd="/")


def test_this_machine_has_every_package_make_test_needs():
    done = run("test", "--check")
    assert done.returncode == 0, done.stderr
    assert "every system package for `make test` is installed" in done.stdout


def test_the_run_set_is_inside_the_test_set():
    assert set(system_deps.RUN_PACKAGES) <= set(system_deps.TEST_PACKAGES)
    assert {"libportaudio2", "python3-venv"} <= set(system_deps.RUN_PACKAGES)
    assert {"jackd2", "liblo-tools"} <= set(system_deps.TEST_PACKAGES)


def test_dpkg_answers_missing_for_an_unknown_package():
    assert system_deps.debian_missing(["libc6", NO_SUCH]) == [NO_SUCH]


def test_root_installs_with_one_line_saying_what(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test checks the root path of the set-up; run the suite as root (as CI does)")
    done = run("test", "--also", NO_SUCH, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"dd-companion setup: installing system packages: {NO_SUCH} (for asked for)"
    assert lines[1:] == ["    apt-get update -qq", f"    apt-get install -y -qq --no-install-recommends {NO_SUCH}"]


def test_a_failed_install_stops_with_the_reason():
    if os.geteuid() != 0:
        pytest.fail("this test checks the root path of the set-up; run the suite as root (as CI does)")
    plan = system_deps.plan("test", platform="debian", missing=[NO_SUCH], is_root=True, passwordless_sudo=False)
    assert plan.can_run and plan.commands[-1][-1] == NO_SUCH
    # the real apt-get refuses a package that does not exist: the step fails and says so
    done = subprocess.run(list(plan.commands[-1]), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert done.returncode != 0


def test_without_root_it_stops_before_anything_and_prints_the_command():
    if os.geteuid() != 0:
        pytest.fail("needs root to run the script as the unprivileged user 'nobody'")
    done = run("run", "--also", NO_SUCH, user="nobody")
    assert done.returncode == 2
    assert done.stdout == ""  # nothing was attempted
    assert f"missing system packages for `make run`: {NO_SUCH}" in done.stderr
    assert f"    sudo apt-get install -y -qq --no-install-recommends {NO_SUCH}" in done.stderr


def test_check_only_reports():
    done = run("test", "--check", "--also", NO_SUCH)
    assert done.returncode == 2 and NO_SUCH in done.stderr and "installing" not in done.stdout


@pytest.mark.parametrize("platform, expect", [
    ("darwin", "    brew install liblo"),
    ("windows", "JACK2 (jackaudio.org) and liblo"),
    ("other", "equivalents of these Debian packages"),
])
def test_other_platforms_get_their_own_instructions(platform, expect):
    done = run("test", "--platform", platform, "--also", "liblo")
    assert done.returncode == 2 and expect in done.stderr, done.stderr


def test_makefile_takes_the_system_step_before_anything_else(tmp_path):
    """In a fresh copy (no environments yet), the first command of `make run` and of `make test` is the
    system-package step, with the right set."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv*", "dist", "build", ".git", "__pycache__", "*.egg-info", ".*_cache", "*.onnx", "*.safetensors"))
    for target in ("run", "test"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}  # as from a shell, not make
        plan = subprocess.run(["make", "-n", target], cwd=clone, capture_output=True, text=True, timeout=60,
                              env=env)
        assert plan.returncode == 0, plan.stderr
        first = next(line for line in plan.stdout.splitlines() if line.strip())
        assert first.endswith(f"tools/system_deps.py {target}"), plan.stdout[:500]
        assert "apt-get" not in plan.stdout  # only the script decides whether to install


def test_ci_runs_make_test_and_nothing_else():
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert not [c for c in commands if c.split()[0] in ("apt-get", "apt", "pip", "python3", "sudo")]


def test_no_environment_or_absolute_link_is_tracked():
    """A tracked `.venv` link (or any link to an absolute path) would replace a user's environment on checkout."""
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listed.splitlines() if line.startswith("120000")]
    assert not [p for p in links if p.split("/")[0].startswith(".venv") or os.readlink(REPO / p).startswith("/")]
    tracked = [line.split("\t", 1)[1] for line in listed.splitlines()]
    assert not [p for p in tracked if p.split("/")[0].startswith(".venv")]

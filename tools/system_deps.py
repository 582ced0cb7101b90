#!/usr/bin/env python3
"""The system packages ``make run`` and ``make test`` need, checked and installed before anything else.

Run by the Makefile with the system's own Python (no virtual environment exists yet, so this file uses the
standard library only)::

    python3 tools/system_deps.py run      # what the companion and its window need
    python3 tools/system_deps.py test     # that, plus what the test suite, the app build and the plugin need

On Debian or Ubuntu it asks dpkg what is missing and installs it with apt-get, as root or through sudo
when sudo needs no password, after one line that says what it installs and why. Where it cannot install
(not root and no password-less sudo, macOS, Windows, another Linux) it installs nothing, prints the exact
command to run on that platform and exits with status 2, so ``make`` stops before doing anything else.
``--check`` only reports; ``--dry-run`` prints the commands it would run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Debian / Ubuntu package names, grouped by what needs them (the reason is printed with the install line).
RUN_PACKAGES: dict[str, str] = {
    "python3-venv": "the virtual environment (Debian keeps ensurepip apart)",
    "libportaudio2": "audio output (sounddevice loads PortAudio from the system on Linux)",
    "libegl1": "the window (Qt)",
    "libgl1": "the window (Qt)",
    "libfontconfig1": "the window (Qt)",
    "libxkbcommon0": "the window (Qt)",
    "libxkbcommon-x11-0": "the window on an X11 desktop (Qt xcb)",
    "libxcb-cursor0": "the window on an X11 desktop (Qt xcb)",
    "libxcb-icccm4": "the window on an X11 desktop (Qt xcb)",
    "libxcb-keysyms1": "the window on an X11 desktop (Qt xcb)",
    "libxcb-shape0": "the window on an X11 desktop (Qt xcb)",
    "libdbus-1-3": "the window (Qt)",
    "fonts-dejavu-core": "the window's font when the desktop has none",
}
TEST_PACKAGES: dict[str, str] = {
    **RUN_PACKAGES,
    "liblo-tools": "the OSC tests' second client (oscsend, oscdump)",
    "jackd2": "real audio and MIDI in the tests (JACK dummy driver)",
    "puredata-core": "the OSC tests' Pd client (docs/examples/dd-companion.pd, run headless)",
    "binutils": "the desktop app build (PyInstaller reads libraries with objdump)",
    "g++": "the DAW plugin build (C++17)",
    "make": "the DAW plugin build",
    "pkg-config": "the DAW plugin build",
    "dpf-source": "the DAW plugin build (DISTRHO Plugin Framework: VST3, CLAP, LV2, JACK)",
    "liblo-dev": "the DAW plugin build (OSC)",
    "libsndfile1-dev": "the DAW plugin build (WAV reading)",
    "libsoxr-dev": "the DAW plugin build (resampling to the host rate)",
    "libjack-jackd2-dev": "the DAW plugin build (its JACK standalone)",
    "jalv": "the plugin tests' LV2 host",
    "lilv-utils": "the plugin tests' LV2 checks (lv2info)",
}
SETS: dict[str, dict[str, str]] = {"run": RUN_PACKAGES, "test": TEST_PACKAGES}

# macOS (Homebrew): PortAudio and Qt come inside the sounddevice and PySide6 wheels; only tools remain.
BREW_PACKAGES: dict[str, dict[str, str]] = {
    "run": {},
    "test": {"liblo": "oscsend", "jack": "jackd"},
}


@dataclass(frozen=True)
class Plan:
    """What to do about the system packages: nothing, run ``commands``, or stop and show ``commands``."""

    missing: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]
    can_run: bool  # True: this process may run ``commands`` itself
    platform: str

    @property
    def ok(self) -> bool:
        return not self.missing


def debian_missing(packages: Iterable[str], query: Callable[[Sequence[str]], str] | None = None) -> list[str]:
    """The packages of ``packages`` that dpkg does not report as installed, in their given order."""
    names = list(packages)
    output = (query or _dpkg_query)(names)
    installed = set()
    for line in output.splitlines():
        name, _, status = line.partition(" ")
        if status.strip().startswith("ii"):
            installed.add(name.split(":")[0])
    return [name for name in names if name not in installed]


def _dpkg_query(names: Sequence[str]) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *names],
                          capture_output=True, text=True, check=False)
    return done.stdout  # unknown packages go to stderr and count as missing


def apt_commands(missing: Sequence[str], *, sudo: bool) -> tuple[tuple[str, ...], ...]:
    prefix = ("sudo",) if sudo else ()
    return (
        (*prefix, "apt-get", "update", "-qq"),
        (*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing),
    )


def plan(which: str, *, platform: str, missing: Sequence[str], is_root: bool, passwordless_sudo: bool) -> Plan:
    """Decide, without side effects, what to do on ``platform`` with these ``missing`` packages."""
    missing = tuple(missing)
    if not missing:
        return Plan(missing, (), True, platform)
    if platform == "debian":
        if is_root:
            return Plan(missing, apt_commands(missing, sudo=False), True, platform)
        return Plan(missing, apt_commands(missing, sudo=True), passwordless_sudo, platform)
    if platform == "darwin":
        return Plan(missing, (("brew", "install", *missing),), False, platform)
    return Plan(missing, (), False, platform)


def detect_platform() -> str:
    if sys.platform == "darwin":
        return "darwin"
    if sys.platform.startswith("win") or sys.platform == "cygwin":
        return "windows"
    if sys.platform.startswith("linux") and shutil.which("dpkg-query") and shutil.which("apt-get"):
        return "debian"
    return "other"


def brew_missing(which: str) -> list[str]:
    return [formula for formula, tool in BREW_PACKAGES[which].items() if shutil.which(tool) is None]


def _passwordless_sudo() -> bool:
    if shutil.which("sudo") is None:
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0


def explain(p: Plan, which: str) -> str:
    """The message for a user who has to install the packages of ``p`` themselves."""
    lines = [f"dd-companion setup: missing system packages for `make {which}`: {' '.join(p.missing)}"]
    if p.platform == "debian":
        lines.append("run this once (it needs root), then run the make command again:")
        lines += ["    " + " ".join(cmd) for cmd in p.commands]
    elif p.platform == "darwin":
        lines.append("install them with Homebrew (https://brew.sh), then run the make command again:")
        lines += ["    " + " ".join(cmd) for cmd in p.commands]
    elif p.platform == "windows":
        lines.append("on Windows, PortAudio and Qt come inside the Python wheels; for the test tools install "
                     "JACK2 (jackaudio.org) and liblo (its oscsend/oscdump), put them on PATH, and run the "
                     "make command again from a shell that has make (MSYS2 or Git Bash)")
    else:
        lines.append("install the equivalents of these Debian packages with your distribution's package "
                     "manager (for example dnf or pacman), then run the make command again")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=sorted(SETS), help="the make command whose packages to check")
    ap.add_argument("--check", action="store_true", help="report what is missing; install nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    ap.add_argument("--also", action="append", default=[], metavar="PACKAGE",
                    help="one more package to require (used by the tests)")
    ap.add_argument("--platform", choices=["debian", "darwin", "windows", "other"],
                    help="assume this platform instead of detecting it (used by the tests)")
    args = ap.parse_args(argv)

    platform = args.platform or detect_platform()
    if platform == "debian":
        wanted = [*SETS[args.which], *args.also]
        missing = debian_missing(wanted)
    elif platform == "darwin":
        missing = [*brew_missing(args.which), *args.also]
    else:
        missing = list(args.also)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    p = plan(args.which, platform=platform, missing=missing, is_root=is_root,
             passwordless_sudo=platform == "debian" and not is_root and _passwordless_sudo())
    if p.ok:
        if args.check:
            print(f"dd-companion setup: every system package for `make {args.which}` is installed")
        return 0
    if args.check or not p.can_run:
        print(explain(p, args.which), file=sys.stderr)
        return 2
    reasons = sorted({SETS[args.which].get(name, "asked for") for name in p.missing})
    print(f"dd-companion setup: installing system packages: {' '.join(p.missing)} "
          f"(for {'; '.join(reasons)})", flush=True)
    for cmd in p.commands:
        if args.dry_run:
            print("    " + " ".join(cmd))
            continue
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            print(f"dd-companion setup: `{' '.join(cmd)}` failed; fix the error above and run the make "
                  "command again", file=sys.stderr)
            return 1
    if not args.dry_run:
        left = debian_missing(p.missing)
        if left:
            print(f"dd-companion setup: still missing after the install: {' '.join(left)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

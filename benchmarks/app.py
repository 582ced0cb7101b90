"""The desktop app against the Python package: bundle size, and start-up to the first ``/dd/pong``.

    make app && python -m benchmarks.app [--repeats 5]

Each start is a cold ``serve`` process (pool off, no MIDI or audio) on a free loopback port; the clock runs
from the process start until a ``/dd/pong`` comes back over real UDP (the benchmark pings every 20 ms).
The three ways of running are interleaved in each round so the machine's load falls on all alike:

- app:     dist/dd-companion/dd-companion (PyInstaller one-folder bundle, ONNX Runtime, no torch)
- light:   .venv-light/bin/dd-companion (``pip install .``: the same light runtime, from site-packages)
- package: .venv/bin/python -m companion (the development install, torch present; the default model
           still runs on its ONNX export, but choosing so imports torch to look for a GPU)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe, gemm_gflops
from osc_protocol.client import OscClient

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dist" / "dd-companion" / "dd-companion"
WAYS = {
    "app": [str(APP)],
    "light": [str(REPO / ".venv-light" / "bin" / "dd-companion")],
    "package": [str(REPO / ".venv" / "bin" / "python"), "-m", "companion"],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_pong(command: list[str], timeout: float = 120.0) -> float:
    """Seconds from starting ``command serve`` to the first /dd/pong it sends back."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CONFIG_HOME": tmp, "QT_QPA_PLATFORM": "offscreen"}
        args = [*command, "serve", "--osc-port", str(port), "--folder", f"{tmp}/out", "--pool-size", "0",
                "--no-live"]
        with OscClient("127.0.0.1", port, timeout=0.02) as client:
            start = time.perf_counter()
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while time.perf_counter() - start < timeout:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{args[0]} serve exited with {proc.returncode} before answering")
                    client.send("/dd/ping")
                    reply = client.receive(0.02)
                    if reply is not None and reply[0] == "/dd/pong":
                        return time.perf_counter() - start
                raise RuntimeError(f"{args[0]} serve sent no /dd/pong in {timeout:.0f} s")
            finally:
                proc.terminate()
                proc.wait(30)


def size_mb(folder: Path) -> float:
    """Bytes on disk under ``folder`` in MiB; symbolic links (PyInstaller links some libraries) count once."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not APP.is_file():
        raise SystemExit(f"no desktop app at {APP}: build it with `make app`")
    ways = {name: cmd for name, cmd in WAYS.items() if Path(cmd[0]).is_file()}
    print(f"machine: {describe()}; fp32 GEMM 2048x2048: {gemm_gflops():.1f} GFLOP/s")
    bundle = APP.parent
    internal = bundle / "_internal"
    parts = sorted(((size_mb(p) if p.is_dir() else p.lstat().st_size / 2**20, p.name)
                    for p in internal.iterdir() if not p.is_symlink()), reverse=True)[:6]
    print(f"bundle: {size_mb(bundle):.0f} MiB unpacked in {bundle} (largest: "
          + ", ".join(f"{name} {mb:.0f}" for mb, name in parts) + ")", flush=True)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, cmd in ways.items():
            times[name].append(time_to_pong(cmd))
    base = statistics.median(times["app"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"start-up to first /dd/pong, {name:8s}: median {med:.2f} s (min {min(values):.2f}, "
              f"max {max(values):.2f}, n={len(values)}), {med / base:.2f}x the app")


if __name__ == "__main__":
    main()

"""The DAW plugin against a real companion: note-to-first-sample (frames) and stock refill time.

Loads the built VST3 (``make plugin``) in pedalboard, starts ``dd-companion serve`` on the shipped default
model, and for each setting in turn (the companion's defaults, then the fast test setting of 4 steps and
0.3 s) measures, with one kick pad stocked two deep (the default) in "new" mode:

- note to first sample: hits at varied frames inside the host's 512-frame blocks; the frames between the
  note's frame and its sound's first sample (minus the file's own leading zeros). Target 0.
- refill: wall time from a hit (which takes a sound out of the pad's stock) until a sound never seen
  before is in the stock (request, render, write, read, hand-over; polled every ~0.15 s), median over
  ``--refills``.

A 2048x2048 fp32 GEMM rate is measured in the same run.

    .venv/bin/python -m benchmarks.plugin_stock [--refills 5] [--hits 24]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.machine import gemm_gflops  # noqa: E402
from tests.plugin_host import Companion, load_vst3, read_wav, render, stocked, wait_until  # noqa: E402

SETTINGS = {"default": False, "fast (4 steps, 0.3 s)": True}  # name -> the tests' fast setting


def measure(plugin, refills: int, hits: int) -> tuple[list[int], list[float], str]:
    wait_until(plugin, lambda p: bool(stocked(p).get(36)), timeout=600)
    latencies, refill_times, seen = [], [], set()
    setting = ""
    for k in range(max(refills, hits)):
        time.sleep(0.3)  # let the stock settle, then hit its head
        render(plugin, 0.05)
        before = stocked(plugin)[36]
        seen.update(before)
        path = before[0]
        recipe = json.loads(Path(path).with_suffix(".json").read_text())
        setting = f"{recipe['recipe']['steps']} steps, {recipe['seconds']} s, {recipe['recipe']['sampler']}"
        frame = 1000 + (k * 97) % 512  # every offset class inside a block, over the run
        wav = read_wav(path)
        out = render(plugin, 0.05 + 2 * wav.shape[1] / 44100, [(frame, 36, 127)])
        lead = int(np.argmax(np.abs(wav[0]) > 0))
        latencies.append(int(np.argmax(np.abs(out[0]) > 0)) - frame - lead)
        t0 = time.monotonic()
        wait_until(plugin, lambda p: any(f not in seen for f in stocked(p).get(36, [])), timeout=600)
        if k < refills:
            refill_times.append(time.monotonic() - t0)
    return latencies, refill_times, setting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refills", type=int, default=5)
    parser.add_argument("--hits", type=int, default=24)
    args = parser.parse_args(argv)
    print(f"GEMM 2048x2048 fp32: {gemm_gflops():.1f} GFLOP/s (start of run)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fast in SETTINGS.items():
            server = Companion(Path(tmp) / name.split()[0] / "out", "--pool-size", "0", fast=fast)
            os.environ.update(DD_COMPANION_PORT=str(server.port), DD_COMPANION_NOTES="36")
            plugin = load_vst3()
            try:
                latencies, refills, setting = measure(plugin, args.refills, args.hits if not rows else args.refills)
            finally:
                del plugin
                server.stop()
            rows.append((name, latencies, refills))
            print(f"{name} ({setting}): note-to-first-sample over {len(latencies)} hits: max {max(latencies)} frames, "
                  f"median {statistics.median(latencies)} (target 0); refill median {statistics.median(refills):.2f} s "
                  f"(min {min(refills):.2f}, max {max(refills):.2f}, n={len(refills)})")
    print(f"GEMM 2048x2048 fp32: {gemm_gflops():.1f} GFLOP/s (end of run)")
    if len(rows) == 2:
        print(f"refill ratio default / fast: {statistics.median(rows[0][2]) / statistics.median(rows[1][2]):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A second client in the suite: Pure Data (vanilla) drives the companion with the patch the docs ship."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from companion.config.settings import Settings
from companion.service.resident import Companion

PATCH = Path(__file__).resolve().parents[1] / "docs" / "examples" / "dd-companion.pd"
WAIT = 60.0


def free_udp_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_documented_pd_patch_gets_a_sample(tmp_path, model_file):
    pd = shutil.which("pd")
    if pd is None:
        pytest.fail("Pure Data is not installed: apt-get install --no-install-recommends puredata-core")
    settings = Settings(folder=str(tmp_path / "out"), osc_port=0, model=str(model_file), device="cpu", steps=3,
                        pool_size=0, oscquery_port=-1)
    companion = Companion(settings)
    companion.start()
    listen = free_udp_port()
    port = companion.server.address[1]
    proc = subprocess.Popen(
        [pd, "-nogui", "-nosound", "-nomidi", "-stderr", "-open", str(PATCH), "-send",
         f"dd-listen {listen}; dd-connect {port}; dd-subscribe {listen}; dd-generate snare 2 77"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x.strip()) for x in proc.stdout], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + WAIT
        while not any(" dd done " in x for x in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
    finally:
        proc.terminate()
        proc.wait(10)
        companion.stop()
    assert f"dd-reply: list dd subscribed 127.0.0.1 {listen}" in seen, seen
    done = next(x for x in seen if " dd done " in x).split()
    paths = [Path(p) for p in done[5:]]  # dd-reply: list dd done <job> <path> <path>
    assert [p.name for p in paths] == ["dd_snare_77_0001.wav", "dd_snare_78_0002.wav"], done
    assert all(sf.read(p)[0].shape == (512, 2) for p in paths)

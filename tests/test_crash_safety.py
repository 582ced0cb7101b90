"""kill -9 of `dd-companion serve` in the middle of writing a sample, then a restart on the same folder.

The writes are made long (4-second float samples at 48 kHz) and slowed down (each block sleeps) in
the killed process only, so the kill reliably lands while a temporary is half written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from osc_protocol.client import OscClient
from tests.reference_nets import save_tiny
from tests.test_serve_osc import REPO, _start_serve

WAIT = 60.0
SLOW_WRITER = """
import sys, time
import companion.output.folder as folder
real = folder._write_all
def slow(f, data):
    real(f, data)
    f.flush()
    time.sleep(0.3)
folder._write_all = slow
from companion.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".partial")]


def test_kill_9_while_writing_leaves_no_partial_file_and_restart_cleans_up(tmp_path):
    model = save_tiny(tmp_path / "tiny.safetensors")
    folder = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, "serve", "--folder", str(folder), "--osc-port", "0", "--model", str(model),
         "--device", "cpu", "--steps", "2", "--seconds", "4", "--rate", "48000", "--format", "float",
         "--pool-size", "0", "--config", str(tmp_path / "none.json"), "--save-settings"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
    )
    try:
        port = None
        for line in proc.stdout:
            if "OSC on udp://" in line:
                port = int(line.split("udp://127.0.0.1:")[1].split()[0])
            if "ready" in line:
                break
        assert port, "serve did not start"
        with OscClient("127.0.0.1", port, timeout=WAIT) as client:
            client.send("/dd/generate", "kick")
            deadline = time.monotonic() + WAIT
            while not [p for p in _partials(folder) if p.name.endswith(f".wav.{proc.pid}.partial")
                       and p.stat().st_size > 0]:
                assert time.monotonic() < deadline, "no write started"
                time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    left = _partials(folder)
    assert left, "the kill should have caught a write in progress"
    assert not list(folder.rglob("*.wav")) and not list(folder.rglob("dd_*.json"))  # nothing under a final name

    proc, port, _ = _start_serve(folder, model, "--steps", "2", "--pool-size", "0")
    try:
        assert _partials(folder) == []  # stale temporaries removed at start-up
        with OscClient("127.0.0.1", port, timeout=WAIT) as client:
            address, args = client.request("/dd/generate", "kick")
            assert address == "/dd/done", args
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    wavs = list(folder.rglob("*.wav"))
    assert [str(p) for p in wavs] == [args[1]]
    for wav in wavs:  # every WAV under a final name is complete
        frames = json.loads(wav.with_suffix(".json").read_text())["frames"]
        assert sf.info(str(wav)).frames == frames

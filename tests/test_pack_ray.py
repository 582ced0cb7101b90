"""A pack on a real local Ray cluster (two workers on loopback): the same bytes as on one machine, also
when a worker is killed mid-run, and a resume that skips what is done. Needs pip install 'dd-companion[ray]'."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from companion.pack.runner import make_pack
from companion.pack.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
[pack]
name = "raypack"
seed = 5

[sampling]
steps = 12
seconds = 0.2

[categories.kick]
count = 6

[categories.snare]
count = 6
"""


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.wav")}


def worker_pids() -> list[int]:
    """Processes of this session's pack actors (Ray titles them ray::PackWorker...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::PackWorker"):
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def cluster():
    try:
        import ray
    except ImportError:
        pytest.fail("Ray is not installed: pip install 'dd-companion[ray]' (or .venv/bin/pip install 'ray==2.60.0')")
    temp = tempfile.mkdtemp(prefix="ddray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), env]) if env else str(ROOT)  # the workers import us
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def single_machine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    (folder / "spec.toml").write_text(SPEC)
    spec = load_spec(folder / "spec.toml")
    make_pack(spec, stream=None)
    return hashes(spec.out)


def test_two_ray_workers_write_the_same_bytes_as_one_machine_even_when_one_is_killed(tmp_path, cluster, single_machine):
    (tmp_path / "spec.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    killed: list[int] = []

    def kill_one_worker_mid_run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(spec.out.rglob("*.wav")):
            time.sleep(0.01)
        pids = worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    killer = threading.Thread(target=kill_one_worker_mid_run, daemon=True)
    killer.start()
    summary = make_pack(spec, ray="auto", chunk=1, stream=None)
    killer.join(timeout=10)
    assert killed, "no worker process was found to kill"
    assert summary.ray["workers"] == 2 and summary.ray["retried"] >= 1 and summary.ray["replaced"] == 1
    assert summary.rendered == 12
    assert hashes(spec.out) == single_machine  # bit-identical to the single-machine pack
    manifest = json.loads((spec.out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["last_run"]["ray"]["retried"] >= 1
    assert not [p for p in spec.out.rglob("*") if p.name.endswith(".partial")]


def test_a_resumed_ray_pack_renders_only_what_is_missing(tmp_path, cluster, single_machine):
    (tmp_path / "spec.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    first = make_pack(spec, ray="auto", chunk=3, stream=None)
    assert first.rendered == 12 and hashes(spec.out) == single_machine
    for name in ("kick/raypack_kick_002.wav", "snare/raypack_snare_006.wav"):
        (spec.out / name).unlink()
    again = make_pack(spec, ray="auto", chunk=3, stream=None)
    assert again.rendered == 2 and again.kept == 10 and again.ray["chunks"] == 1
    assert hashes(spec.out) == single_machine
    assert make_pack(spec, ray="auto", stream=None).complete_before


def test_serve_does_not_import_ray():
    import subprocess

    code = ("import sys; import companion.cli.main as m; m.build_parser(); import companion.service.resident; "
            "import companion.cli.serve; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

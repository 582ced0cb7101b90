"""The desktop app as built by ``make app`` (dist/dd-companion): the bundle itself is run, not the source.

``make test`` builds the app before the suite, so a missing bundle is a failure that says how to build it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from companion.config.version import VERSION
from companion.output.wavfile import read_recipe
from osc_protocol.client import OscClient

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "dist" / "dd-companion"
APP = BUNDLE / "dd-companion"
LIMIT_MIB = 400  # issue 19: the one-folder bundle stays under 400 MB unpacked


@pytest.fixture(scope="module")
def app() -> Path:
    if not APP.is_file():
        pytest.fail(f"the desktop app is not built ({APP} is missing): build it with `make app`")
    return APP


@pytest.fixture
def env(tmp_path):
    """A user with no settings file of their own, no display (Qt renders offscreen)."""
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "QT_QPA_PLATFORM": "offscreen"}


def run_app(app: Path, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # cwd outside the repository: the bundle must not find the sources by accident
    return subprocess.run([str(app), *args], env=env, cwd=env["XDG_CONFIG_HOME"].rsplit("/", 1)[0],
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bundle_is_the_light_runtime_and_small(app):
    internal = BUNDLE / "_internal"
    names = {p.name for p in internal.rglob("*")}
    assert not {n for n in names if n == "torch" or n.startswith("libtorch")}, "torch must not be bundled"
    assert "dd-default.onnx" in names and "dd-default.safetensors" not in names
    assert any(n.startswith("libportaudio") for n in names), "PortAudio must travel with the app"
    assert (internal / "docs" / "OSC.md").is_file()
    size = sum(p.lstat().st_size for p in BUNDLE.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20
    assert size < LIMIT_MIB, f"bundle is {size:.0f} MiB, over the {LIMIT_MIB} MiB target"


def test_version_names_app_model_and_runtime(app, env):
    done = run_app(app, env, "--version", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    first, model, runtime = done.stdout.strip().splitlines()
    assert first.startswith(f"dd-companion {VERSION} (desktop app")
    assert model.startswith("model: dd-default") and "sha256 " in model and "dd-default.onnx" in model
    assert runtime.startswith("runtime: onnxruntime 1.") and "torch" not in runtime


def test_generate_writes_a_wav(app, env, tmp_path):
    out = tmp_path / "gen"
    done = run_app(app, env, "generate", "--category", "snare", "--count", "2", "--seed", "11", "--steps", "4",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == 2
    for wav in wavs:
        audio, rate = sf.read(wav, always_2d=True)
        assert rate == 44100 and 0.5 < len(audio) / rate < 1.0
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01  # a sound, not silence
        assert read_recipe(wav)["category"] == "snare"


def test_bad_request_is_refused_with_the_allowed_values(app, env, tmp_path):
    done = run_app(app, env, "generate", "--category", "tuba", "--out", str(tmp_path / "x"), timeout=120)
    assert done.returncode != 0 and "tuba" in done.stderr and "kick" in done.stderr
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").rglob("*.wav"))


def test_serve_answers_ping_and_generate(app, env, tmp_path):
    port = free_port()
    folder = tmp_path / "served"
    proc = subprocess.Popen([str(app), "serve", "--osc-port", str(port), "--folder", str(folder),
                             "--pool-size", "0", "--steps", "4", "--no-live"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with OscClient("127.0.0.1", port, timeout=1.0) as client:
            deadline = time.monotonic() + 120
            pong = None
            while pong is None and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stdout.read()[-2000:]
                client.send("/dd/ping", 5)
                try:
                    pong = client.wait_for("/dd/pong", 0.5)
                except TimeoutError:  # still starting: ping again
                    continue
            assert pong is not None and list(pong[1]) == [5]
            client.send("/dd/generate", "kick", 1, 21)
            done = client.wait_for(("/dd/done", "/dd/error"), 120)
            assert done[0] == "/dd/done", done
            path = Path(next(a for a in done[1] if isinstance(a, str) and a.endswith(".wav")))
            assert path.is_file() and folder in path.parents
            audio, rate = sf.read(path)
            assert rate == 44100 and np.abs(audio).max() > 0.01
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_window_screenshot_renders_offscreen(app, env, tmp_path):
    from PySide6.QtGui import QImage

    from tests.test_gui import wave_pixels

    shot = tmp_path / "shot.png"
    config = tmp_path / "s.toml"
    config.write_text(f'folder = "{tmp_path / "out"}"\nsteps = 3\npool_size = 0\n'
                      'audio_device = "No Such Audio Device"\n')
    done = run_app(app, env, "gui", "--config", str(config), "--screenshot", str(shot), "--wait", "200")
    assert done.returncode == 0, done.stderr[-2000:]
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500
    assert wave_pixels(image) > 16 * 200  # sixteen drawn waveforms, not a blank window


def test_pack_from_the_app_is_bit_identical_to_the_package(app, env, tmp_path):
    import json
    import shutil
    import sys

    spec = REPO / "examples" / "small-pack.toml"
    for where, command in (("app", [str(app)]), ("package", [sys.executable, "-m", "companion"])):
        folder = tmp_path / where
        folder.mkdir()
        shutil.copy(spec, folder / spec.name)
        done = subprocess.run([*command, "pack", str(folder / spec.name), "--kit", "sfz", "--quiet"], env=env,
                              cwd=REPO if where == "package" else tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{where}: {done.stderr[-2000:]}"
    manifests = [json.loads((tmp_path / w / "small-pack" / "manifest.json").read_text()) for w in ("app", "package")]
    sums = [{f["path"]: f["sha256"] for f in m["files"]} for m in manifests]
    assert len(sums[0]) == 8 and sums[0] == sums[1]
    assert (tmp_path / "app" / "small-pack" / "small-pack.sfz").is_file()

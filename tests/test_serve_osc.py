"""The companion over real UDP on loopback: the full OSC bridge in-process, and `serve` as a subprocess."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

import companion.output.folder as folder_mod
from companion.config.settings import Settings
from companion.engine.requests import GenerateRequest
from companion.output.wavfile import read_recipe
from companion.service.resident import Companion
from osc_protocol.client import OscClient
from tests.reference_nets import save_tiny

REPO = Path(__file__).resolve().parents[1]
WAIT = 30.0




@pytest.fixture
def serve(tmp_path, model_file):
    """Start an in-process companion on a free port; returns (companion, client)."""
    running = []

    def start(**overrides):
        settings = Settings(folder=str(tmp_path / "out"), osc_port=0, model=str(model_file), device="cpu",
                            steps=3, pool_size=0).updated(overrides)
        companion = Companion(settings)
        companion.start()
        client = OscClient(*companion.server.address, timeout=WAIT)
        running.append((companion, client))
        return companion, client

    yield start
    for companion, client in running:
        client.close()
        companion.stop()


def collect(client, expect, job=None, timeout=WAIT):
    """Every reply up to and including the final one (``expect``) of ``job``."""
    seen = []
    final = client.wait_for(expect, timeout, job=job, on_reply=lambda a, r: seen.append((a, r)))
    return final, seen


def test_generate_over_udp_gives_paths_to_readable_wavs(serve):
    companion, client = serve()
    client.send("/dd/generate", "kick", 2, 1234)
    (address, args), seen = collect(client, ("/dd/done", "/dd/error"))
    assert address == "/dd/done", args
    assert seen[0] == ("/dd/queued", (args[0],))
    paths = [Path(p) for p in args[1:]]
    assert [p.name for p in paths] == ["dd_kick_1234_0001.wav", "dd_kick_1235_0002.wav"]
    for path in paths:
        audio, rate = sf.read(path)
        assert path.is_absolute() and rate == 16000 and audio.shape == (512, 2)
        assert path.parent == companion.folder.root / "Kick"


@pytest.mark.parametrize(
    "message, code, needle",
    [
        (("/dd/generate", "hat"), "not_found", "category 'hat' not found; model 'tiny' has: kick, snare, clap"),
        (("/dd/generate", "kick", 0), "out_of_range", "count must be in range 1..64, got 0"),
        (("/dd/set", "steps", 0), "out_of_range", "steps must be in range 1..1000, got 0"),
        (("/dd/set", "sampler", "euler"), "bad_config", "sampler must be one of"),
        (("/dd/set", "strength", 0.0), "out_of_range", "strength must be in (0, 1]"),
        (("/dd/set", "guidance", 25.0), "out_of_range", "guidance must be in range 1..20, got 25.0"),
        (("/dd/set", "guidance", 0), "out_of_range", "guidance must be in range 1..20, got 0.0"),
        (("/dd/set", "guidance", "strong"), "bad_type", "guidance must be a number, got 'strong'"),
        (("/dd/set", "tail_gate", -5.0), "out_of_range", "tail_gate must be 0 (off) or in -120..-10, got -5.0"),
        (("/dd/set", "tail_gate", -130.0), "out_of_range", "tail_gate must be in range -120..0, got -130.0"),
        (("/dd/set", "band_limit", 2), "out_of_range", "band_limit must be in range 0..1, got 2"),
        (("/dd/set", "band_limit", "on"), "bad_type", "band_limit must be"),
        (("/dd/get", "colour"), "unknown_param", "unknown setting 'colour'"),
        (("/dd/variation", "/no/such.wav"), "not_found", "source file '/no/such.wav' does not exist"),
        (("/dd/variation", "job:77"), "not_found", "job 77 has no result"),
        (("/dd/morph", "/a.wav", "/b.wav", 1), "out_of_range", "frames must be in range 2..64"),
        (("/dd/pad/trigger", 20), "not_found", "pad 20 is not in the pad map"),
        (("/dd/pad/trigger", 42), "not_found", "pad 42 plays 'closed_hat', which the loaded model does not have"),
        (("/dd/cancel", 999), "unknown_job", "job 999 is neither queued nor running"),
        (("/dd/model/load", "no-such-model"), "not_found", "model 'no-such-model' not found"),
        (("/dd/generat", "kick"), "unknown_address", "did you mean /dd/generate"),
        (("/dd/generate", 5), "bad_type", "category must be a string"),
    ],
)
def test_each_kind_of_bad_input_gets_its_error(serve, message, code, needle):
    companion, client = serve()
    address, args = client.request(*message)
    assert address == "/dd/error" and args[0] == -1 and args[1] == code, args
    assert needle in args[2]
    assert client.request("/dd/ping", 5) == ("/dd/pong", (5,))


def test_unreadable_source_is_bad_audio(serve, tmp_path):
    companion, client = serve()
    text = tmp_path / "kick notes.wav"
    text.write_text("not audio")
    address, args = client.request("/dd/variation", str(text), 0.5)
    assert (address, args[:2]) == ("/dd/error", (-1, "bad_audio")) and "kick notes.wav" in args[2]


def test_garbage_leaves_the_server_answering(serve):
    companion, client = serve()
    rng = random.Random(4)
    for _ in range(200):
        client.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    client.send_raw(b"/dd/generate\x00\x00\x00\x00,s\x00\x00kick")  # truncated string
    # the garbage's own /dd/error replies may still be arriving: wait for the pong itself
    assert client.request("/dd/ping", 1, timeout=10, expect=("/dd/pong",)) == ("/dd/pong", (1,))
    assert client.request("/dd/generate", "kick", expect=("/dd/done",))[0] == "/dd/done"


def test_after_a_burst_of_garbage_every_valid_request_is_answered_and_jobs_complete(serve):
    companion, client = serve(steps=20, pool_size=1)
    client.send("/dd/generate", "kick", 1, 7)  # in progress while the burst comes
    _, (first,) = client.wait_for("/dd/queued")
    for i in range(2000):  # as fast as one Python sender can
        client.send_raw(b"\x00" + bytes([i % 251]) * (i % 60))
    for token in range(10):
        client.send("/dd/ping", token)
    client.send("/dd/generate", "snare", 2)
    pongs, done = set(), {}
    deadline = time.monotonic() + WAIT
    while (len(pongs) < 10 or len(done) < 2) and time.monotonic() < deadline:
        message = client.receive(0.5)
        if message is None:
            continue
        address, args = message
        if address == "/dd/pong":
            pongs.add(args[0])
        elif address == "/dd/done":
            done[args[0]] = [Path(p) for p in args[1:]]
    assert pongs == set(range(10))
    assert first in done and sorted(len(paths) for paths in done.values()) == [1, 2]
    for paths in done.values():  # complete files, nothing half-written
        for path in paths:
            audio, rate = sf.read(path)
            assert audio.shape == (512, 2)
    assert not list(companion.folder.root.rglob("*.partial"))
    deadline = time.monotonic() + WAIT  # and the pre-render pool goes on: full again
    while not (companion.pool.counts() and all(n == 1 for n in companion.pool.counts().values())) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert companion.pool.counts() == {"kick": 1, "snare": 1, "clap": 1}


def test_a_burst_beyond_the_queue_bound_gets_busy_and_every_accepted_job_completes(serve):
    companion, client = serve(queue_limit=2, steps=40)
    for _ in range(8):
        client.send("/dd/generate", "snare")
    queued, done, busy = set(), set(), 0
    deadline = time.monotonic() + WAIT
    while (not queued or done != queued or len(queued) + busy < 8) and time.monotonic() < deadline:
        message = client.receive(1.0)
        if message is None:
            continue
        address, args = message
        if address == "/dd/queued":
            queued.add(args[0])
        elif address == "/dd/done":
            done.add(args[0])
            assert all(Path(p).is_file() for p in args[1:])
        elif address == "/dd/error":
            assert args[0] == -1 and args[1] == "busy", args
            busy += 1
    assert busy >= 1 and len(queued) >= 2 and len(queued) + busy == 8 and done == queued


def test_cancel_mid_job(serve):
    companion, client = serve(steps=1000)
    client.send("/dd/generate", "kick")
    _, args = client.wait_for("/dd/progress")
    job = args[0]
    assert client.request("/dd/cancel", job, expect=("/dd/cancelled",)) == ("/dd/cancelled", (job,))
    address, args = client.wait_for(("/dd/error", "/dd/done"), job=job)
    assert (address, args[:2]) == ("/dd/error", (job, "cancelled"))
    assert not list(companion.folder.root.rglob("*.wav"))
    assert client.request("/dd/status") == ("/dd/status", ("idle", "tiny", "torch-cpu", 0))


def test_model_switch_failure_keeps_the_old_model_and_success_switches(serve, tmp_path):
    companion, client = serve()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage" * 10)
    client.send("/dd/model/load", str(broken))
    _, (job,) = client.wait_for("/dd/queued")
    address, args = client.wait_for(("/dd/loaded", "/dd/error"), job=job)
    assert (address, args[:2]) == ("/dd/error", (job, "bad_model")), args
    assert client.request("/dd/status")[1][1] == "tiny"
    assert client.request("/dd/generate", "clap")[0] == "/dd/done"

    drums = save_tiny(tmp_path / "drums.safetensors", categories=("tom", "perc"), name="drums", seed=2)
    address, args = client.request("/dd/model/load", str(drums))
    assert address == "/dd/loaded" and args[1] == "drums"
    assert client.request("/dd/categories") == ("/dd/categories", ("tom", "perc"))
    assert client.request("/dd/pad/trigger", 45)[0] == "/dd/done"  # GM low tom


def test_pool_answers_pad_hits_at_once_and_refills(serve):
    companion, client = serve(pool_size=2, steps=20)
    deadline = time.monotonic() + WAIT
    while companion.pool.counts().get("kick") != 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.perf_counter()
    client.send("/dd/pad/trigger", 36, 100)
    (address, args), seen = collect(client, ("/dd/done", "/dd/error"))
    latency = time.perf_counter() - t0
    assert address == "/dd/done" and Path(args[1]).parent.name == "Kick"
    assert not [a for a, _ in seen if a == "/dd/progress"]  # nothing was rendered for it
    assert latency < 1.0, latency  # typically a few ms: the write and fsync
    while companion.pool.counts().get("kick") != 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert companion.pool.counts()["kick"] == 2
    address, args = client.request("/dd/pad/regenerate", 36)  # never from the pool: rendered now
    assert address == "/dd/done" and Path(args[1]).is_file()


@pytest.mark.parametrize("code, wire", [(errno.ENOSPC, "disk_full"), (errno.EROFS, "folder_unwritable")])
def test_disk_trouble_is_reported_and_the_engine_keeps_serving(serve, monkeypatch, code, wire):
    companion, client = serve()

    def failing(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(folder_mod, "_write_all", failing)
    client.send("/dd/generate", "kick")
    _, (job,) = client.wait_for("/dd/queued")
    address, args = client.wait_for(("/dd/done", "/dd/error"), job=job)
    assert (address, args[:2]) == ("/dd/error", (job, wire)) and str(companion.folder.root) in args[2]
    monkeypatch.undo()
    assert client.request("/dd/generate", "kick")[0] == "/dd/done"


def test_settings_status_and_broadcasts(serve):
    companion, client = serve()
    assert client.request("/dd/get", "steps") == ("/dd/param", ("steps", 3))
    assert client.request("/dd/set", "seed", 77) == ("/dd/param", ("seed", 77))
    address, args = client.request("/dd/generate", "snare", 2)
    assert [Path(p).name.split("_")[2] for p in args[1:]] == ["77", "78"]
    assert client.request("/dd/models")[0] == "/dd/models"
    with OscClient(*companion.server.address, timeout=WAIT) as listener:
        assert listener.request("/dd/reply/subscribe", listener.address[1])[0] == "/dd/subscribed"
        job = companion.engine.submit(GenerateRequest("clap", origin="midi"))  # a pad hit from MIDI
        _, args = listener.wait_for("/dd/done", job=job.id)
        assert Path(args[1]).parent.name == "Clap"


def test_set_guidance_over_udp_guides_what_the_engine_renders(serve):
    companion, client = serve()
    assert client.request("/dd/get", "guidance") == ("/dd/param", ("guidance", 1.0))  # the model's: none
    _, args = client.request("/dd/generate", "kick", 1, 1234, expect=("/dd/done",))
    plain = Path(args[1])
    assert client.request("/dd/set", "guidance", 3) == ("/dd/param", ("guidance", 3.0))
    assert client.request("/dd/get", "guidance") == ("/dd/param", ("guidance", 3.0))
    _, args = client.request("/dd/generate", "kick", 1, 1234, expect=("/dd/done",))
    guided = Path(args[1])
    for path, guidance in ((plain, 1.0), (guided, 3.0)):
        assert read_recipe(path)["recipe"]["guidance"] == guidance  # the WAV's INFO chunk
        assert json.loads(path.with_suffix(".json").read_text())["recipe"]["guidance"] == guidance  # the sidecar
    assert abs(sf.read(guided)[0] - sf.read(plain)[0]).max() > 1e-3  # same seed, another sound
    _, args = client.request("/dd/variation", str(guided), 0.5, 1, 7, expect=("/dd/done",))
    assert read_recipe(args[1])["recipe"]["guidance"] == 3.0
    _, args = client.request("/dd/morph", str(plain), str(guided), 2, expect=("/dd/done",))
    assert [read_recipe(p)["recipe"]["guidance"] for p in args[1:]] == [1.0, 1.0]  # morphs stay unguided
    assert companion.settings_in_effect().guidance == 3.0  # what --save-settings / the window's Save keep


def test_set_tail_gate_over_udp_applies_to_what_the_engine_renders(serve):
    companion, client = serve()
    assert client.request("/dd/get", "tail_gate") == ("/dd/param", ("tail_gate", 0.0))  # the model's: none
    assert client.request("/dd/set", "tail_gate", -30) == ("/dd/param", ("tail_gate", -30.0))
    assert client.request("/dd/get", "tail_gate") == ("/dd/param", ("tail_gate", -30.0))
    _, args = client.request("/dd/generate", "kick", 1, 1234, expect=("/dd/done",))
    gated = Path(args[1])
    assert read_recipe(gated)["recipe"]["tail_gate_db"] == -30.0  # the WAV's INFO chunk
    assert json.loads(gated.with_suffix(".json").read_text())["recipe"]["tail_gate_db"] == -30.0  # the sidecar
    _, args = client.request("/dd/variation", str(gated), 0.5, 1, 7, expect=("/dd/done",))
    assert read_recipe(args[1])["recipe"]["tail_gate_db"] == -30.0
    assert client.request("/dd/set", "tail_gate", 0) == ("/dd/param", ("tail_gate", 0.0))  # off
    _, args = client.request("/dd/generate", "kick", 1, 1234, expect=("/dd/done",))
    assert read_recipe(Path(args[1]))["recipe"]["tail_gate_db"] == 0.0
    assert companion.settings_in_effect().tail_gate == 0.0  # what --save-settings / the window's Save keep


def test_set_band_limit_over_udp_applies_to_what_the_engine_renders(serve, tmp_path):
    import numpy as np

    # claps: 2 kHz to 6 kHz; kicks: a 3 kHz high cut
    model = save_tiny(tmp_path / "cut.safetensors", low_cut_hz=(0.0, 0.0, 2000.0), high_cut_hz=(3000.0, 0.0, 6000.0))
    companion, client = serve(model=str(model))
    assert client.request("/dd/get", "band_limit") == ("/dd/param", ("band_limit", 1))  # the model has them: on

    def render(category):
        _, args = client.request("/dd/generate", category, 1, 1234, expect=("/dd/done",))
        path = Path(args[1])
        assert json.loads(path.with_suffix(".json").read_text())["recipe"] == read_recipe(path)["recipe"]
        recipe = read_recipe(path)["recipe"]
        return path, (recipe["low_cut_hz"], recipe["high_cut_hz"])

    def low_db(path):  # energy under 500 Hz, against the whole sound's
        audio = sf.read(path)[0].T
        power = np.abs(np.fft.rfft(audio, axis=-1)) ** 2
        low = power[:, np.fft.rfftfreq(audio.shape[-1], 1 / 16000) < 500].sum()
        return 10 * np.log10(low / power.sum())

    cut, corner = render("clap")
    assert corner == (2000.0, 6000.0)  # the WAV's INFO chunk and the sidecar
    assert render("kick")[1] == (0.0, 3000.0)
    _, args = client.request("/dd/morph", str(cut), str(cut), 2, expect=("/dd/done",))  # a clap morph (its recipe)
    assert [read_recipe(p)["recipe"]["low_cut_hz"] for p in args[1:]] == [2000.0, 2000.0]
    assert client.request("/dd/set", "band_limit", 0) == ("/dd/param", ("band_limit", 0))
    assert client.request("/dd/get", "band_limit") == ("/dd/param", ("band_limit", 0))
    plain, corner = render("clap")
    assert corner == (0.0, 0.0)
    assert low_db(cut) < low_db(plain) - 20.0  # same seed: the low end is what the cut took
    _, args = client.request("/dd/morph", str(cut), str(plain), 2, expect=("/dd/done",))
    assert [read_recipe(p)["recipe"]["low_cut_hz"] for p in args[1:]] == [0.0, 0.0]
    assert companion.settings_in_effect().band_limit == 0  # what --save-settings / the window's Save keep


def _start_serve(folder, model, *extra, env=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "companion", "serve", "--config", str(folder.parent / "absent.json"),
         "--save-settings", "--folder", str(folder), "--osc-port", "0", "--model", str(model), "--device", "cpu",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "ready" in line:
            break
    port = next((int(m.group(1)) for x in lines if (m := re.search(r"OSC on udp://127\.0\.0\.1:(\d+)", x))), None)
    assert port, "".join(lines)
    return proc, port, lines


def test_sigterm_stops_serve_cleanly_with_exit_0(tmp_path, model_file):
    folder = tmp_path / "out"
    proc, port, lines = _start_serve(folder, model_file, "--steps", "3", "--pool-size", "1")
    try:
        with OscClient("127.0.0.1", port, timeout=WAIT) as client:
            address, args = client.request("/dd/generate", "kick")
            assert address == "/dd/done" and Path(args[1]).is_file()
            client.send("/dd/set", "steps", 1000)
            client.send("/dd/generate", "snare")  # still rendering when the signal comes
            client.wait_for("/dd/progress")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "SIGTERM received" in out and "dd-companion serve: stopped" in out
    assert not [p for p in folder.rglob("*") if p.name.endswith(".partial")]
    assert [p.name for p in folder.rglob("*.wav")] == [Path(args[1]).name]
    assert "settings saved to" in "".join(lines)


def test_auto_fill_keeps_at_most_m_files_per_category(serve):
    companion, client = serve(max_per_category=2)
    paths = [client.request("/dd/generate", "clap")[1][1] for _ in range(3)]
    left = sorted(p.name for p in (companion.folder.root / "Clap").glob("*.wav"))
    assert left == sorted(Path(p).name for p in paths[1:])  # the oldest went


def test_dd_companion_send_wraps_the_client(serve, capsys):
    from companion.cli.main import build_parser

    def main(argv):  # cli.main without its logging set-up (which would outlive capsys)
        args = build_parser().parse_args(argv)
        return args.run(args)

    companion, client = serve()
    port = str(companion.server.address[1])
    assert main(["send", "--port", port, "--wait", "--timeout", "20", "/dd/generate", "snare", "1", "-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("/dd/queued ") and "/dd/done " in out and "Snare/dd_snare_" in out
    assert main(["send", "--port", port, "--wait", "/dd/generate", "hat"]) == 1
    assert "/dd/error -1 not_found" in capsys.readouterr().out
    assert main(["send", "--port", port, "/dd/ping"]) == 0  # fire and forget

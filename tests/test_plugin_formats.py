"""The plugin's other formats in real hosts: LV2 in jalv on a JACK dummy server (a note makes the companion's
sound), the JACK standalone's ports, and the CLAP entry point with its factory and descriptor."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.plugin_host import BIN, RATE, REPO, Companion, build, read_wav

SERVER = f"ddplug{os.getpid()}"
PERIOD = 512
OFFSET = 100  # the note's frame inside its JACK cycle


def _need(tool: str, package: str) -> None:
    assert shutil.which(tool), f"{tool} is not installed: apt-get install -y --no-install-recommends {package}"


@pytest.fixture(scope="module")
def jack_server():
    build()
    _need("jackd", "jackd2")
    _need("jack_lsp", "jackd2")
    _need("jalv", "jalv")
    # only looked for here: the recording client runs in a child process (libjack keeps per-server state
    # that must not meet the suite's other JACK server inside one process)
    import importlib.util

    assert importlib.util.find_spec("jack"), "JACK-Client is not installed: pip install JACK-Client (the dev extra)"
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    server = subprocess.Popen(["jackd", "-n", SERVER, "-R", "-P", "70", "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    try:
        ready = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True, timeout=20)
        assert server.poll() is None and "available" in ready.stdout, ready.stdout + ready.stderr
        yield SERVER
    finally:
        server.terminate()
        server.wait(10)
        os.environ.pop("JACK_DEFAULT_SERVER", None)


def _ports() -> str:
    return subprocess.run(["jack_lsp", "-t"], capture_output=True, text=True, timeout=10).stdout


def test_the_clap_entry_point_gives_a_factory_and_the_instrument_descriptor():
    """Loaded in a child process, as a host would: a plugin library's static state must not outlive the check
    inside the test runner (nor can a crash in it take the suite down)."""
    build()
    child = subprocess.run([sys.executable, "-c", "from tests.test_plugin_formats import check_clap; check_clap()"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.strip() == "clap ok"


def check_clap() -> None:
    """Open the CLAP bundle with ctypes and walk clap_entry -> init -> plugin factory -> descriptor."""

    class Descriptor(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32 * 3), ("id", ctypes.c_char_p), ("name", ctypes.c_char_p),
                    ("vendor", ctypes.c_char_p), ("url", ctypes.c_char_p), ("manual_url", ctypes.c_char_p),
                    ("support_url", ctypes.c_char_p), ("plugin_version", ctypes.c_char_p),
                    ("description", ctypes.c_char_p), ("features", ctypes.POINTER(ctypes.c_char_p))]

    class Factory(ctypes.Structure):
        _fields_ = [("get_plugin_count", ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p)),
                    ("get_plugin_descriptor", ctypes.CFUNCTYPE(ctypes.POINTER(Descriptor), ctypes.c_void_p,
                                                               ctypes.c_uint32))]

    class Entry(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32 * 3), ("init", ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_char_p)),
                    ("deinit", ctypes.CFUNCTYPE(None)),
                    ("get_factory", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p))]

    path = BIN / "dd-companion.clap"
    library = ctypes.CDLL(str(path))
    entry = Entry.in_dll(library, "clap_entry")
    assert entry.version[0] == 1  # CLAP 1.x
    assert entry.init(str(path).encode())
    try:
        assert not entry.get_factory(b"no.such.factory")
        pointer = entry.get_factory(b"clap.plugin-factory")
        assert pointer
        factory = Factory.from_address(pointer)
        assert factory.get_plugin_count(pointer) == 1
        descriptor = factory.get_plugin_descriptor(pointer, 0).contents
        assert descriptor.id == b"org.dd-companion.plugin" and descriptor.name == b"DD Companion"
        features = []
        while descriptor.features[len(features)]:
            features.append(descriptor.features[len(features)])
        assert b"instrument" in features and b"drum" in features
    finally:
        entry.deinit()
    print("clap ok")


def test_the_jack_standalone_registers_midi_in_and_stereo_out(jack_server, tmp_path):
    env = dict(os.environ, DD_COMPANION_PORT="9", JACK_DEFAULT_SERVER=jack_server)  # no companion there: still runs
    app = subprocess.Popen([str(BIN / "dd-companion")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 15
        while "DD Companion:audio_out_2" not in (ports := _ports()):
            assert app.poll() is None, "the standalone exited"
            assert time.monotonic() < deadline, ports
            time.sleep(0.2)
        lines = ports.splitlines()
        assert lines[lines.index("DD Companion:events-in") + 1].strip() == "8 bit raw midi"
        assert lines[lines.index("DD Companion:audio_out_1") + 1].strip() == "32 bit float mono audio"
    finally:
        app.terminate()
        app.wait(10)


def test_the_lv2_build_in_jalv_plays_the_companions_sound_from_a_note(jack_server, tmp_path):
    companion = Companion(tmp_path / "out")
    lv2 = tmp_path / "lv2"
    lv2.mkdir()
    (lv2 / "dd-companion.lv2").symlink_to(BIN / "dd-companion.lv2")
    recorded = tmp_path / "take.npy"
    env = dict(os.environ, LV2_PATH=str(lv2), DD_COMPANION_PORT=str(companion.port), DD_COMPANION_NOTES="36",
               JACK_DEFAULT_SERVER=jack_server)
    try:
        child = subprocess.run([sys.executable, "-c", "import sys; from tests.test_plugin_formats import record_lv2; "
                                "record_lv2(*sys.argv[1:])", jack_server, str(companion.folder), str(recorded)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    finally:
        companion.stop()
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    audio = np.load(recorded)
    kicks = sorted(companion.folder.rglob("*.wav"))
    onset = int(np.argmax(np.abs(audio[0]) > 0))
    # the recorder feeds jalv and listens to it, so JACK runs them a cycle apart: the sound starts at the
    # note's frame, in this cycle or the next
    assert onset in (OFFSET, PERIOD + OFFSET), onset
    assert not audio[:, :onset].any()
    matches = []
    for path in kicks:
        wav = read_wav(str(path))
        n = wav.shape[1]
        if np.allclose(audio[:, onset:onset + n], wav, rtol=0, atol=1e-6):
            matches.append(path)
    assert len(matches) == 1, "the LV2 instance played exactly one of the companion's kicks, sample for sample"
    assert not audio[:, onset + read_wav(str(matches[0])).shape[1]:].any()


def test_the_lv2_bundle_describes_an_instrument_lilv_can_read(tmp_path):
    build()
    _need("lv2info", "lilv-utils")
    (tmp_path / "dd-companion.lv2").symlink_to(BIN / "dd-companion.lv2")
    info = subprocess.run(["lv2info", "urn:dd-companion:plugin"], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, LV2_PATH=str(tmp_path)))
    assert info.returncode == 0, info.stderr
    text = info.stdout
    assert "DD Companion" in text
    for symbol in ("lv2_audio_out_1", "lv2_audio_out_2", "lv2_events_in", "behaviour", "stock", "regenerate",
                   "vary", "status"):
        assert f"Symbol:      {symbol}\n" in text, symbol
    ttl = (BIN / "dd-companion.lv2" / "dd-companion_dsp.ttl").read_text()
    assert "lv2:InstrumentPlugin" in ttl and "midi:MidiEvent" in ttl


def record_lv2(server: str, folder: str, out: str) -> None:
    """In a child process: jalv hosts the LV2 build; a JACK client of ours sends one note once the stock has
    filled and records two seconds of jalv's output into ``out`` (.npy)."""
    from pathlib import Path

    import jack

    host = subprocess.Popen(["jalv", "-n", "ddjalv", "urn:dd-companion:plugin"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = jack.Client("ddlv2test", servername=server, no_start_server=True)
    midi = client.midi_outports.register("midi")
    ins = [client.inports.register(f"in_{k}") for k in (1, 2)]
    audio = np.zeros((2, RATE * 2), np.float32)
    state = {"note": False, "recording": False, "pos": 0}

    @client.set_process_callback
    def process(frames: int) -> None:
        midi.clear_buffer()
        if state["note"]:
            midi.write_midi_event(OFFSET, bytes([0x99, 36, 127]))
            state["note"] = False
            state["recording"] = True
        if state["recording"] and state["pos"] < audio.shape[1]:
            n = min(frames, audio.shape[1] - state["pos"])
            for k, port in enumerate(ins):
                audio[k, state["pos"]:state["pos"] + n] = port.get_array()[:n]
            state["pos"] += n

    try:
        with client:
            deadline = time.monotonic() + 20
            while "ddjalv:lv2_audio_out_2" not in _ports():
                assert host.poll() is None, "jalv exited"
                assert time.monotonic() < deadline, _ports()
                time.sleep(0.2)
            client.connect(midi, "ddjalv:lv2_events_in")
            client.connect("ddjalv:lv2_audio_out_1", ins[0])
            client.connect("ddjalv:lv2_audio_out_2", ins[1])
            deadline = time.monotonic() + 60  # its stock (two kicks by default) fills in wall time
            while len(sorted(Path(folder).rglob("*.wav"))) < 2:
                assert time.monotonic() < deadline, "the LV2 instance asked the companion for nothing"
                time.sleep(0.2)
            time.sleep(1.0)  # read and handed to the audio thread
            state["note"] = True
            deadline = time.monotonic() + 10
            while state["pos"] < audio.shape[1]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        host.stdin.close()
        host.terminate()
        host.wait(10)
    np.save(out, audio)

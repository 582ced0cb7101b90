"""A real JACK server (dummy driver, real-time) for audio and MIDI tests, and a JACK recorder.

Test files import the fixtures: ``from tests.conftest_jack import jack_server, recorder  # noqa: F401``.
The server runs once per session: ``jackd -n <name> -R -P 70 -d dummy -r 48000 -p 256``. Clients find
it through JACK_DEFAULT_SERVER; mido uses rtmidi's JACK API (its ALSA API needs a kernel sequencer
the CI machine lacks). PortAudio is re-initialised once the server runs (it scans at start-up) and
terminated before the server stops (otherwise the interpreter aborts in pa_jack.c at exit).
Tests fail (never skip) when jackd, libportaudio2 or the Python clients are missing, naming the package.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

RATE = 48000
PERIOD = 256
SERVER = f"ddtest{os.getpid()}"
MIDO_JACK = "mido.backends.rtmidi/UNIX_JACK"


def missing() -> str | None:
    """Why the JACK rig cannot run here, naming what to install; None when it can."""
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        return "jackd not installed (make test installs it: apt-get install jackd2)"
    if ctypes.util.find_library("portaudio") is None:
        return "PortAudio not installed (make test installs it: apt-get install libportaudio2)"
    for module, package in (("sounddevice", "sounddevice"), ("jack", "JACK-Client"), ("mido", "mido"),
                            ("rtmidi", "python-rtmidi")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} not installed (pip install {package})"
        except OSError as exc:
            return f"{module} cannot load its library: {exc}"
    return None


@pytest.fixture(scope="session")
def jack_server():
    reason = missing()
    if reason:
        pytest.fail(reason)
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    os.environ["MIDO_BACKEND"] = MIDO_JACK
    os.environ.setdefault("JACK_NO_AUDIO_RESERVATION", "1")
    log = open(os.devnull, "wb")  # noqa: SIM115 -- lives as long as the server
    server = subprocess.Popen(["jackd", "-n", SERVER, "-R", "-P", "70", "-d", "dummy", "-r", str(RATE),
                               "-p", str(PERIOD)], stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True, timeout=20)
        if server.poll() is not None or "available" not in ready.stdout:
            raise RuntimeError(f"jackd did not start: {ready.stdout} {ready.stderr}")
        import mido

        mido.set_backend(MIDO_JACK, load=True)
        from companion.live import audio_device

        audio_device.rescan_devices()  # PortAudio sees JACK only if it (re)starts after the server
        yield SERVER
    finally:
        try:
            from companion.live import audio_device

            audio_device.terminate()  # before jackd goes away
        except Exception:
            pass
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


RECORDER_SCRIPT = r"""
import sys, time, numpy as np, jack
server, seconds = sys.argv[1], float(sys.argv[2])
client = jack.Client("ddrecorder", servername=server, no_start_server=True)
ports = [client.inports.register(f"in_{i + 1}") for i in range(2)]
audio = np.zeros((int(seconds * client.samplerate), 2), np.float32)
state = {"on": False, "pos": 0, "start": -1, "gaps": 0, "xruns": 0, "next": -1}

def process(frames):
    if not state["on"]:
        return
    pos = state["pos"]
    now = client.last_frame_time
    if pos == 0:
        state["start"] = now
    elif now != state["next"]:
        state["gaps"] += 1
    state["next"] = now + frames
    n = min(frames, len(audio) - pos)
    for i, port in enumerate(ports):
        audio[pos:pos + n, i] = port.get_array()[:n]
    state["pos"] = pos + n

def xrun(delay):
    state["xruns"] += 1

client.set_process_callback(process)
client.set_xrun_callback(xrun)
client.activate()
print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "connect":
        for src, dst in zip(args, ports):
            client.connect(src, dst)
    elif cmd == "start":
        state.update(pos=0, start=-1)
        audio.fill(0.0)
        state["on"] = True
    elif cmd == "pos":
        pass
    elif cmd == "stop":
        state["on"] = False
        time.sleep(0.02)
        np.save(args[0], audio[:state["pos"]])
    print(state["pos"], state["start"], state["gaps"] + state["xruns"], flush=True)
"""


class Recorder:
    """A JACK recorder in its own process (its callback must not wait for this process's GIL, which
    the companion's threads hold), driven over a pipe. ``now()`` is JACK's current frame time, so a
    note's send time and the sound's start are measured on JACK's own clock."""

    def __init__(self, folder, seconds: float = 10.0) -> None:
        import jack

        self.folder = folder
        self.proc = subprocess.Popen([sys.executable, "-c", RECORDER_SCRIPT, SERVER, str(seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the JACK recorder did not start")
        self.clock = jack.Client("ddclock", servername=SERVER, no_start_server=True)
        self.pos, self.start_frame, self._glitches, self._takes = 0, -1, 0, 0

    def _ask(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        pos, start, glitches = self.proc.stdout.readline().split()
        self.pos, self.start_frame, self._glitches = int(pos), int(start), int(glitches)

    def connect_to(self, exclude: str = "system:") -> list[str]:
        """Connect to every audio output port not of ``exclude`` nor the recorder's."""
        sources = sorted(p.name for p in self.clock.get_ports(is_audio=True, is_output=True)
                         if not p.name.startswith((exclude, "ddrecorder:")))
        self._ask("connect " + " ".join(sources))
        return sources

    def start(self) -> None:
        self._ask("start")

    def refresh(self) -> int:
        self._ask("pos")
        return self.pos

    def stop(self) -> np.ndarray:
        self._takes += 1
        path = os.path.join(self.folder, f"take{self._takes}.npy")
        self._ask(f"stop {path}")
        return np.load(path)

    def glitches(self) -> int:
        """xruns and skipped cycles so far (a take with new ones may have lost or repeated audio)."""
        return self._glitches

    def now(self) -> int:
        return self.clock.frame_time

    def index_of(self, frame: int) -> int:
        return frame - self.start_frame

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)
        self.clock.close()


@pytest.fixture(scope="session")
def recorder(jack_server, tmp_path_factory):
    rec = Recorder(str(tmp_path_factory.mktemp("takes")))
    yield rec
    rec.close()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(0.005)


def onset(audio, start=0):
    nonzero = np.flatnonzero(np.abs(audio[start:, 0]) > 0)
    return start + int(nonzero[0]) if len(nonzero) else -1


def matching(captured, expected, atol=1e-5, slack=4):
    """The fraction of ``expected``'s frames heard exactly (to float error) in ``captured``.

    Compared a period at a time: each period-long block of ``expected`` must be in ``captured`` at its own
    place, or shifted by up to ``slack`` whole periods. On a loaded 2-core machine JACK may skip a cycle of
    the recorder now and then (an xrun): everything after it then arrives a period early, and a strict
    frame-by-frame comparison would count the rest of the sound as unheard (a run lost a test that way at
    77%). A block across the skip still differs, so the tests ask for most of the sound, not all of it. A
    wrong sample, gain or start matches almost nowhere."""
    n, total = len(captured), len(expected)
    if n == 0 or total == 0:
        return 0.0
    heard, shift = 0, 0
    tries = [k * PERIOD for j in range(1, slack + 1) for k in (-j, j)]
    for at in range(0, total, PERIOD):
        block = expected[at:at + PERIOD]
        for offset in (shift, *(shift + t for t in tries)):  # the shift found last first
            s = at + offset
            if 0 <= s and s + len(block) <= n and np.abs(captured[s:s + len(block)] - block).max() <= atol:
                heard += len(block)
                shift = offset
                break
    return heard / total

"""The audio output in its own process, on a real JACK server (dummy driver, real time).

A pad's sample handed to the separate audio process must be heard at its JACK ports exactly (a JACK
recorder in a third process captures them); chokes work there; its underrun counter comes back; a
clean close leaves no process and nothing in /dev/shm; a child killed with SIGKILL is reported, the
companion goes on and ``reopen`` (or the automatic re-open) starts a new one; with the JACK server
down audio is off, and it comes back by itself once the server runs (and again after it went away).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from companion.live.audio_device import AudioDeviceError
from companion.live.audio_out import AudioOut
from companion.live.mixer import Mixer, MixerError
from companion.live.padrack import PadRack, PadSample
from tests.conftest_jack import PERIOD, RATE, wait_for

pytest_plugins = ("tests.conftest_jack",)  # the jack_server and recorder fixtures

MASTER = 0.5  # the sums stay under the limiter's knee: what is heard is the samples, linearly


class FakeEngine:
    """What the pad rack needs of an engine when nothing is generated."""

    model = None
    folder = None

    def add_listener(self, listener):
        pass

    def remove_listener(self, listener):
        pass

    def submit(self, request, listener=None):
        raise AssertionError("nothing is generated here")


def burst(seconds: float, seed: int, amp: float = 0.6) -> np.ndarray:
    """A decaying noise burst, different on each channel, with no exact zeros."""
    n = int(seconds * RATE)
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(n) / (0.3 * n))[:, None]
    noise = rng.uniform(0.2, 1.0, (n, 2)) * rng.choice([-1.0, 1.0], (n, 2))
    return np.ascontiguousarray(amp * noise * decay, dtype=np.float32)


def onset(audio: np.ndarray, start: int = 0) -> int:
    nonzero = np.flatnonzero(np.abs(audio[start:, 0]) > 0)
    return start + int(nonzero[0]) if len(nonzero) else -1


def matching(captured: np.ndarray, expected: np.ndarray, atol: float = 1e-5) -> float:
    """The fraction of ``expected``'s frames heard exactly (to float error) in ``captured`` (a JACK
    xrun on a loaded machine may spoil a period or two, so tests ask for most, not all)."""
    n = min(len(captured), len(expected))
    if n == 0:
        return 0.0
    return float((np.abs(captured[:n] - expected[:n]).max(axis=1) <= atol).mean()) * n / len(expected)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    x, y = a[:n].ravel(), b[:n].ravel()
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))


def shm_left(names) -> list[str]:
    return [n for n in names if os.path.exists(f"/dev/shm/{n}")]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too (its parent reaps it)
        return f.read().split(")")[-1].split()[0] == "Z"


def record(recorder, action, after: float = 0.6) -> np.ndarray:
    recorder.start()
    wait_for(lambda: recorder.refresh() > PERIOD * 4, 5, "recorder running")
    action()
    time.sleep(after)
    return recorder.stop().copy()


@pytest.fixture
def out(jack_server, recorder):
    states: list[tuple[str, str]] = []
    audio = AudioOut(functools.partial(Mixer, master_gain=MASTER), "system", process=True, auto_reopen=False,
                     on_state=lambda state, detail: states.append((state, detail)))
    audio.states = states
    audio.open()
    recorder.connect_to()
    yield audio
    audio.close()


@pytest.fixture
def rack(out):
    r = PadRack(FakeEngine(), {"behaviour": "keep"})  # not started: hits play the current samples
    r.attach_output(out.mixer)
    return r


def test_a_pads_sample_is_heard_exactly_through_the_audio_process(out, rack, recorder):
    from companion.live.audio_proc import MixerProxy

    assert isinstance(out.mixer, MixerProxy) and out.pid not in (None, os.getpid())
    assert "in audio process" in out.describe() and out.running
    assert (out.mixer.rate, out.mixer.channels) == (RATE, 2)
    sample = burst(0.25, seed=1)
    rack.pad(36).current = PadSample(sample, Path("/x/kick.wav"), 1)
    assert out.mixer.load(sample)  # shared ahead of the hit, as the live rig does for every new sample
    audio = record(recorder, lambda: rack.hit(36, 127))
    start = onset(audio)
    assert start >= 0, "nothing was heard"
    expected = sample * MASTER
    heard = audio[start:start + len(sample)]
    assert matching(heard, expected) > 0.9, f"only {matching(heard, expected):.0%} of the sample matches"
    assert correlation(heard, expected) > 0.99
    assert not audio[start + len(sample) + PERIOD:].any()  # and then silence

    velocity = record(recorder, lambda: rack.hit(36, 64))  # velocity gain, applied in the child
    start = onset(velocity)
    assert matching(velocity[start:], expected * (64 / 127) ** 2) > 0.9
    with pytest.raises(MixerError, match="float32"):  # refused here, with the mixer's own message
        out.mixer.play(np.zeros((10, 2)), 1.0)


def test_the_closed_hat_chokes_the_open_hat_in_the_audio_process(out, rack, recorder):
    open_hat, closed_hat = burst(0.5, seed=2, amp=0.5), burst(0.08, seed=3, amp=0.5)
    rack.pad(46).current = PadSample(open_hat, Path("/x/open.wav"), 2)
    rack.pad(42).current = PadSample(closed_hat, Path("/x/closed.wav"), 3)

    def hats():
        rack.hit(46, 127)
        time.sleep(0.15)
        rack.hit(42, 127)

    audio = record(recorder, hats)
    start = onset(audio)
    assert matching(audio[start:start + 2000], open_hat[:2000] * MASTER) > 0.8  # the open hat began
    size = 1 << int(np.ceil(np.log2(len(audio) + len(closed_hat))))  # where the closed hat is heard
    xcorr = np.fft.irfft(np.fft.rfft(audio[:, 0], size) * np.conj(np.fft.rfft(closed_hat[:, 0], size)), size)
    at = int(np.argmax(xcorr[:len(audio)]))
    assert 0.1 * RATE < at - start < 0.4 * RATE
    fade = int(0.005 * RATE) + 2
    alone = matching(audio[at + fade:at + len(closed_hat)], closed_hat[fade:] * MASTER)
    assert alone > 0.9, f"after the closed hat more than the closed hat is heard ({alone:.0%} match)"
    assert np.abs(open_hat[at - start + fade:]).max() > 1e-2  # without the choke the open hat would go on
    assert not audio[at + len(closed_hat) + PERIOD:].any()


def test_underruns_in_the_audio_process_are_counted_here(out):
    mixer = out.mixer
    wait_for(lambda: mixer.rendered_frames > RATE // 10, 5, "the stream runs")
    before = mixer.underruns
    for _ in range(3):  # a stalled callback: JACK runs on without it, PortAudio reports the underflow
        os.kill(out.pid, signal.SIGSTOP)
        time.sleep(0.1)
        os.kill(out.pid, signal.SIGCONT)
        time.sleep(0.1)
    wait_for(lambda: mixer.underruns > before, 5, "underruns reported")
    frames = mixer.rendered_frames
    wait_for(lambda: mixer.rendered_frames > frames + RATE // 10, 5, "the stream goes on")
    assert out.running and out.error is None


def test_closing_leaves_no_process_and_no_shared_memory(out):
    proc, pid = out._proc, out.pid
    samples = [burst(0.1, seed=s) for s in range(5)]
    for s in samples:
        assert out.mixer.play(s, 0.5)
    out.mixer.load(burst(0.1, seed=9))  # a sample that dies at once: its block is unloaded
    wait_for(lambda: out.mixer.active_voices() > 0, 5, "voices sound")
    assert len(proc.created) >= 7  # the counters' block and one per sample
    wait_for(lambda: not shm_left(proc.created), 5, "names unlinked once mapped")
    out.close()
    assert gone(pid) and proc.exitcode == 0, proc.exitcode
    assert not shm_left(proc.created)
    assert out.states[-1] == ("closed", "") and out.mixer is None and not out.running


def test_a_killed_audio_process_is_reported_and_reopen_starts_a_new_one(out, recorder):
    mixer, pid, proc = out.mixer, out.pid, out._proc
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: out.states[-1][0] == "error", 10, "the death reported")
    assert "audio process was killed by SIGKILL" in out.states[-1][1] and out.error == out.states[-1][1]
    assert not out.running and out.mixer is None and "audio off" in out.describe()
    assert mixer.play(burst(0.05, seed=4), 1.0) is False  # a stale proxy refuses quietly
    assert not shm_left(proc.created)
    time.sleep(0.5)
    assert out.pid is None  # auto_reopen=False: nothing restarts it
    new = out.reopen()
    assert out.pid not in (None, pid) and out.error is None
    recorder.connect_to()
    sample = burst(0.1, seed=5)
    audio = record(recorder, lambda: new.play(sample, 1.0), after=0.3)
    start = onset(audio)
    assert matching(audio[start:], sample * MASTER) > 0.9


def test_a_killed_audio_process_comes_back_by_itself(jack_server):
    states = []
    out = AudioOut(functools.partial(Mixer), "system", process=True, poll_interval=0.5,
                   on_state=lambda state, detail: states.append(state))
    out.open()
    try:
        pid = out.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: states[-1:] == ["open"] and len(states) >= 3, 15, "a new audio process")
        assert states == ["open", "error", "open"] and out.pid not in (None, pid)
        frames = out.mixer.rendered_frames
        wait_for(lambda: out.mixer.rendered_frames > frames, 5, "the new stream runs")
    finally:
        out.close()


def test_device_errors_from_the_audio_process_keep_their_messages(jack_server):
    refused = AudioOut(functools.partial(Mixer), "system", rate=44100, process=True)
    with pytest.raises(AudioDeviceError, match="refuses 44100 Hz"):
        refused.open()
    assert refused.pid is None and refused.mixer is None and "44100" in refused.error
    missing = AudioOut(functools.partial(Mixer), "Focusrite 18i20", process=True, auto_reopen=False)
    with pytest.raises(AudioDeviceError, match="'Focusrite 18i20' not found; output devices: .*system"):
        missing.open()
    assert missing.pid is None
    refused.close()
    missing.close()


def test_an_unpicklable_mixer_factory_falls_back_to_this_process(jack_server):
    out = AudioOut(lambda channels, rate: Mixer(channels, rate), "system", process=True)
    try:
        mixer = out.open()
        assert isinstance(mixer, Mixer) and out.pid is None and out.error is None
    finally:
        out.close()


# ---------------------------------------------------------------------- a JACK server that comes and goes


class SecondServer:
    """Another jackd (the session's keeps running for the other tests), started and stopped at will."""

    def __init__(self) -> None:
        self.name = f"ddtest{os.getpid()}b"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, JACK_DEFAULT_SERVER=self.name)
        self.proc = subprocess.Popen(["jackd", "-n", self.name, "-R", "-P", "70", "-d", "dummy", "-r", str(RATE),
                                      "-p", str(PERIOD)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        ready = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True, timeout=20, env=env)
        assert "available" in ready.stdout, ready.stdout + ready.stderr

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


def test_audio_comes_back_by_itself_when_the_jack_server_starts_and_again_after_it_went_away(
        jack_server, monkeypatch):
    from companion.live.rig import LiveRig

    server = SecondServer()
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)  # the audio process follows it; this one never
    events: list[tuple[str, str]] = []
    rig = LiveRig(FakeEngine(), midi=False, audio_device="system", audio_poll_interval=0.5,
                  on_event=lambda kind, info: events.append((kind, info.get("detail", ""))))
    try:
        rig.start()  # the server is down: audio off, the companion runs
        assert rig.mixer is None and rig.rack._mixer is None
        assert events[0][0] == "audio_error" and ("not found" in events[0][1] or "no audio output" in events[0][1])
        assert rig.audio.pid is not None  # the audio process waits for the device
        server.start()
        wait_for(lambda: rig.mixer is not None and events[-1][0] == "audio_open", 20, "audio back once JACK runs")
        assert rig.rack._mixer is rig.mixer
        frames = rig.mixer.rendered_frames
        wait_for(lambda: rig.mixer.rendered_frames > frames + RATE // 10, 5, "the stream runs")
        assert "audio on 'system'" in rig.status()["audio"]

        server.stop()  # the device goes away under a running stream
        wait_for(lambda: rig.mixer is None and events[-1][0] == "audio_error", 20, "the loss noticed")
        assert "stopped (disconnected?)" in events[-1][1] and rig.rack._mixer is None
        server.start()
        wait_for(lambda: rig.mixer is not None and events[-1][0] == "audio_open", 30, "audio back a second time")
        assert rig.rack._mixer is rig.mixer
    finally:
        rig.stop()
        server.stop()
    assert [kind for kind, _ in events if kind.startswith("audio_")][-1] == "audio_closed"



IN_PROCESS_SCRIPT = r"""
import functools, sys, time
from companion.live.audio_device import AudioDeviceError, terminate
from companion.live.audio_out import AudioOut
from companion.live.mixer import Mixer
states = []
out = AudioOut(functools.partial(Mixer), "system", process=False, poll_interval=0.5,
               on_state=lambda state, detail: states.append(state))
try:
    out.open()
except AudioDeviceError as exc:
    print("off", exc, flush=True)
sys.stdin.readline()  # the server runs now
deadline = time.monotonic() + 20
while states[-1:] != ["open"] and time.monotonic() < deadline:
    time.sleep(0.05)
frames = out.mixer.rendered_frames if out.mixer is not None else 0
time.sleep(0.3)
runs = out.mixer is not None and out.mixer.rendered_frames > frames
print("states", ",".join(states), out.running, out.pid, runs, flush=True)
out.close()
terminate()  # before the server stops
"""


def test_in_process_audio_also_comes_back_by_itself_when_the_jack_server_starts(jack_server):
    """In a process of its own: libjack serves one JACK server per process, and this one already talks
    to the session's (the recorder's clock)."""
    import sys

    server = SecondServer()
    env = dict(os.environ, JACK_DEFAULT_SERVER=server.name)
    root = Path(__file__).resolve().parent.parent
    script = subprocess.Popen([sys.executable, "-c", IN_PROCESS_SCRIPT], cwd=root, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        off = script.stdout.readline()
        assert off.startswith("off ") and ("not found" in off or "no audio output" in off), off
        server.start()
        script.stdin.write("go\n")
        script.stdin.flush()
        assert script.stdout.readline().split() == ["states", "error,open", "True", "None", "True"]
        assert script.wait(20) == 0
    finally:
        if script.poll() is None:
            script.kill()
        server.stop()


ORPHAN_SCRIPT = r"""
import functools, sys, time
import numpy as np
from companion.live.audio_out import AudioOut
from companion.live.mixer import Mixer
if __name__ == "__main__":
    out = AudioOut(functools.partial(Mixer), "system", process=True)
    mixer = out.open()
    mixer.load(np.zeros((4800, 2), np.float32))
    print(out.pid, " ".join(out._proc.created), flush=True)
    time.sleep(60)
"""


def test_the_audio_process_ends_when_the_companion_is_killed(jack_server, tmp_path):
    import sys

    script = tmp_path / "companion_like.py"
    script.write_text(ORPHAN_SCRIPT)
    root = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen([sys.executable, str(script)], cwd=root, text=True, stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        pid, *names = parent.stdout.readline().split()
        child = int(pid)
        assert not gone(child)
        parent.kill()  # no clean-up of its own: the child notices its pipe close
        parent.wait(10)
        wait_for(lambda: gone(child), 10, "the audio process ended")
        wait_for(lambda: not shm_left(names), 10, "no shared memory left")
    finally:
        if parent.poll() is None:
            parent.kill()

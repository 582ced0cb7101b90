"""The audio process itself (started by :class:`companion.live.audio_proc.AudioProcess` with "spawn").

It imports numpy, sounddevice and the mixer, nothing of the engine. Its main thread forwards
commands from the parent's pipe into the mixer's lock-free ring (the mixer's producer side) and
maps sample blocks; the PortAudio callback renders the mixer, as in the companion's own process,
but here no engine thread competes for the GIL. While the device is missing it re-scans the devices
every ``retry_s`` seconds (no stream is open then) and opens it when it is there. When the device
goes away under the stream (the stream ends, or its callback stops being called) it reports that and
ends at once, without touching PortAudio again; the parent starts a new one, which waits for the
device. It also ends on "close", when the parent's pipe closes (the parent died) and after an error
it cannot wait out (a refused sample rate).
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import sys
import time
from typing import Any

import numpy as np

from companion.live.audio_device import RETRY_KINDS, AudioDeviceError, open_stream, rescan_devices

STATS_FORMAT = "<8q"  # as companion.live.audio_proc.STATS_FORMAT
TICK_S = 0.02  # counters refresh and device checks while a stream runs
IDLE_TICK_S = 0.25
STALL_S = 2.0  # a running stream whose callback has not run for this long has lost its device


def map_shared(name: str, size: int, write: bool = False) -> mmap.mmap:
    """Map the shared-memory block ``name`` (as SharedMemory names it). The mapping lives as long as
    the returned object (and any array over it); the parent unlinks the name."""
    access = mmap.ACCESS_WRITE if write else mmap.ACCESS_READ
    if os.name == "nt":
        return mmap.mmap(-1, size, tagname=name, access=access)
    import _posixshmem

    fd = _posixshmem.shm_open("/" + name, os.O_RDWR if write else os.O_RDONLY, mode=0o600)
    try:
        return mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)


class Child:
    def __init__(self, cmd: Any, evt: Any, config: dict[str, Any]) -> None:
        self.cmd, self.evt, self.config = cmd, evt, config
        self.retry_s = float(config["retry_s"])
        self.stats = map_shared(config["stats"], struct.calcsize(STATS_FORMAT), write=True)
        self.stream: Any = None
        self.mixer: Any = None
        self.device: Any = None
        self.epoch = 0
        self.samples: dict[int, np.ndarray] = {}
        self.finished = False
        self.waiting = False
        self.next_probe = 0.0
        self.last_frames, self.last_progress = -1, 0.0

    def send(self, msg: tuple) -> None:
        try:
            self.evt.send(msg)
        except (OSError, ValueError):  # the parent is gone: the command pipe says so too
            pass

    def run(self) -> None:
        self.send(("started", os.getpid()))
        try:
            self.try_open(first=True)
            while self.stream is not None or self.waiting:
                if self.cmd.poll(TICK_S if self.stream is not None else IDLE_TICK_S):
                    try:
                        msg = self.cmd.recv()
                    except (EOFError, OSError):
                        break  # the parent is gone
                    if msg[0] == "close":
                        break
                    self.handle(msg)
                self.write_stats()
                if self.stream is not None and (self.finished or not self.stream.active or self.stalled()):
                    self.lost()
                elif self.stream is None and self.waiting and time.monotonic() >= self.next_probe:
                    self.probe()
        finally:
            self.shutdown()

    # ------------------------------------------------------------------ the device

    def try_open(self, first: bool = False) -> None:
        c = self.config
        try:
            stream, mixer, device = open_stream(c["device"], c["rate"], c["blocksize"], c["latency"], c["factory"],
                                                self.on_finished)
        except AudioDeviceError as exc:
            retry = bool(self.retry_s) and exc.kind in RETRY_KINDS
            if first or not retry:  # while it waits, the same failure is not news
                self.send(("error", exc.kind, str(exc), retry))
            self.waiting = retry
            self.next_probe = time.monotonic() + self.retry_s
            return
        self.epoch += 1
        self.samples.clear()
        self.finished, self.waiting = False, False
        self.last_frames, self.last_progress = -1, time.monotonic()
        self.stream, self.mixer, self.device = stream, mixer, device
        self.write_stats()
        self.send(("open", {"epoch": self.epoch, "pid": os.getpid(), "index": device.index, "device": device.name,
                            "hostapi": device.hostapi, "device_channels": device.channels,
                            "default_rate": device.default_rate, "rate": stream.samplerate,
                            "channels": stream.channels, "latency": stream.latency,
                            "polyphony": mixer.polyphony, "master_gain": mixer.master_gain}))

    def probe(self) -> None:
        try:
            rescan_devices()  # no stream is open here now
        except AudioDeviceError as exc:
            self.send(("error", exc.kind, str(exc), False))
            self.waiting = False
            return
        self.try_open()

    def on_finished(self) -> None:
        """PortAudio's thread: the stream ended (closed, or its device went away)."""
        self.finished = True

    def stalled(self) -> bool:
        frames, now = self.mixer.rendered_frames, time.monotonic()
        if frames != self.last_frames:
            self.last_frames, self.last_progress = frames, now
        return now - self.last_progress > STALL_S

    def lost(self) -> None:
        """The device went away under the stream. Closing such a stream (or PortAudio) may hang or
        abort (JACK gone: an assertion in pa_jack.c), so this process just ends; the parent starts a
        new one, which waits for the device."""
        name = self.device.name if self.device is not None else "?"
        self.send(("error", "vanished", f"audio device '{name}' stopped (disconnected?)", False))
        os._exit(0)

    def close_stream(self) -> None:
        stream, self.stream, self.mixer = self.stream, None, None
        self.samples.clear()
        if stream is not None:
            try:
                stream.stop()  # plays what is buffered
                stream.close()
            except Exception as exc:  # a device that vanished may refuse: it is gone anyway
                self.send(("log", f"closing the stream: {exc}"))
        self.write_stats()

    def shutdown(self) -> None:
        self.close_stream()
        try:
            import sounddevice

            sounddevice._terminate()  # before the process ends (and before a JACK server stops)
        except Exception:
            pass
        self.send(("closed",))

    # ------------------------------------------------------------------ commands

    def handle(self, msg: tuple) -> None:
        kind, mixer = msg[0], self.mixer
        if kind == "load":
            _, epoch, sid, name, frames, channels = msg
            if epoch == self.epoch and mixer is not None and channels == mixer.channels:
                try:
                    block = map_shared(name, max(1, frames * channels * 4))
                    self.samples[sid] = np.frombuffer(block, np.float32, frames * channels).reshape(frames, channels)
                except (OSError, ValueError) as exc:
                    self.send(("log", f"cannot map sample {sid}: {exc}"))
            self.send(("mapped", sid))  # mapped or refused: the name can go
        elif kind == "unload":
            for sid in msg[1]:
                self.samples.pop(sid, None)  # the mixer frees its bank slot once no voice uses it
        elif mixer is None or msg[1] != self.epoch:
            return  # meant for a stream that is gone
        elif kind == "play":
            buffer = self.samples.get(msg[2])
            if buffer is not None:
                mixer.play(buffer, msg[3], group=msg[4], cuts=msg[5], pad=msg[6])
        elif kind == "choke":
            mixer.choke(msg[2])
        elif kind == "stop_all":
            mixer.stop_all()
        elif kind == "master":
            mixer.set_master_gain(msg[2])

    def write_stats(self) -> None:
        m = self.mixer
        if m is not None:  # once a stream is gone its last counts stay
            struct.pack_into(STATS_FORMAT, self.stats, 0, self.epoch, m.underruns, m.rendered_frames,
                             m.active_voices(), m.dropped, m.limited_blocks, 0, 0)


def main(cmd: Any, evt: Any, config: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent closes us
    sys.setswitchinterval(0.0005)  # the callback gets the GIL back quickly from the forwarding thread
    Child(cmd, evt, config).run()

"""The audio output in its own process, so that the PortAudio callback never waits for our GIL.

The engine's threads (NumPy sampler, torch or ONNX Runtime, the file writer) hold this process's GIL
for long stretches; an audio callback in this process has to wait for it and the device underruns.
:class:`AudioProcess` starts a child with the "spawn" method (:mod:`companion.live.audio_child`: numpy,
sounddevice and the mixer only) that owns the stream and the real :class:`~companion.live.mixer.Mixer`.

- Samples travel through shared memory, one block per sample: the block is written here, the child
  maps it (read-only) and answers "mapped", and then the name is unlinked at once, so nothing is
  left in /dev/shm even if either process is killed later; the memory goes when both unmap it.
- Commands (load, play, choke, stop all, master gain, unload, close) are small pickled tuples on a
  pipe whose write end is non-blocking: a stuck child makes a play fail (counted in ``dropped``),
  never makes the MIDI thread wait. The child's main thread forwards them into the mixer's
  lock-free ring, so its callback still never allocates, locks or waits.
- Counters (underruns, voices, frames rendered, drops) come back in a small shared-memory block the
  child refreshes every 20 ms; state changes and errors come back on a second pipe, read by a
  thread here that also notices the child dying (its pipe closes) and reports it.

:class:`MixerProxy` has the mixer's producer API (``rate``, ``channels``, ``play``, ``choke``,
``stop_all``, ``set_master_gain``, ``active_voices``, ``underruns``...) so the pad rack cannot tell
the difference; its :meth:`MixerProxy.load` uploads a sample ahead of its first hit.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import struct
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from companion.live.audio_device import AudioDeviceError
from companion.live.mixer import MixerError, check_gain, check_voice

log = logging.getLogger("dd.audio")

STATS_FORMAT = "<8q"  # epoch, underruns, rendered_frames, voices, dropped, limited_blocks, spare, spare
STATS_SIZE = struct.calcsize(STATS_FORMAT)
START_TIMEOUT_S = 60.0  # a fresh interpreter importing numpy on a loaded machine
OPEN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
MAX_UNLOADS = 200  # sample ids per unload message: keeps every message below PIPE_BUF (atomic writes)


class AudioSpawnError(Exception):
    """The audio process could not be started at all (not a device problem)."""


def exit_reason(code: int | None) -> str:
    if code is None:
        return "did not answer"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _drop(shm: SharedMemory) -> None:
    try:
        shm.close()
    except Exception:
        pass
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


class AudioProcess:
    """One child process playing one device. ``on_event(self, kind, detail, error_kind, waiting)``
    hears "open" (its device opened again), "error" (lost or refused; ``waiting``: it looks for the
    device itself) and "exit" (it died), from the reader thread."""

    def __init__(self, factory: Callable[..., Any], device: str | None, *, rate: int | None, blocksize: int,
                 latency: float | str, retry_s: float, on_event: Callable[..., None]) -> None:
        self._config = {"factory": factory, "device": device, "rate": rate, "blocksize": blocksize,
                        "latency": latency, "retry_s": retry_s}
        self._on_event = on_event
        self.info: dict[str, Any] = {}
        self.pid: int | None = None
        self.alive = False
        self.exitcode: int | None = None
        self.created: collections.deque[str] = collections.deque(maxlen=4096)  # shared-memory names made
        self.send_failures = 0
        self._proc: Any = None
        self._cmd: Any = None
        self._evt: Any = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._reg_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._pending: dict[int, SharedMemory] = {}  # loads the child has not mapped yet
        self._next_sid = 1
        self._stats: SharedMemory | None = None
        self._dead = False
        self._closing = False
        self._expect_exit = False

    # ------------------------------------------------------------------ starting

    def start(self) -> dict[str, Any]:
        """Start the child and wait until it has the device open: its description. AudioDeviceError
        when it reports a device problem (``alive`` stays True if it waits for the device);
        AudioSpawnError when no child could be started."""
        from companion.live import audio_child

        ctx = multiprocessing.get_context("spawn")
        try:
            self._stats = SharedMemory(create=True, size=STATS_SIZE)
            self.created.append(self._stats.name)
            cmd_r, cmd_w = ctx.Pipe(duplex=False)
            evt_r, evt_w = ctx.Pipe(duplex=False)
        except OSError as exc:
            self._finish()
            raise AudioSpawnError(str(exc)) from None
        config = dict(self._config, stats=self._stats.name)
        proc = ctx.Process(target=audio_child.main, args=(cmd_r, evt_w, config), name="dd-audio", daemon=True)
        try:
            proc.start()
        except Exception as exc:  # unpicklable factory, no fork/exec, frozen app without freeze_support...
            for conn in (cmd_r, cmd_w, evt_r, evt_w):
                conn.close()
            self._finish()
            raise AudioSpawnError(f"{type(exc).__name__}: {exc}") from None
        cmd_r.close()  # the child holds these: their closing tells each side the other is gone
        evt_w.close()
        try:
            os.set_blocking(cmd_w.fileno(), False)
        except (AttributeError, OSError):  # not a POSIX pipe: writes may block
            pass
        self._proc, self._cmd, self._evt, self.pid, self.alive = proc, cmd_w, evt_r, proc.pid, True
        first = self._expect(START_TIMEOUT_S)
        if first is None or first[0] != "started":
            self._reap(kill=True)
            self._finish()
            raise AudioSpawnError(f"the audio process {exit_reason(self.exitcode)} before it was ready")
        self._unlink_stats_name()  # the child has mapped it
        msg = self._expect(OPEN_TIMEOUT_S)
        if msg is None:
            self._reap(kill=True)
            self._finish()
            raise AudioDeviceError(f"the audio process {exit_reason(self.exitcode)} while opening audio device "
                                   f"'{self._config['device'] or 'default'}'", "crashed")
        if msg[0] == "error":
            _, kind, text, waiting = msg
            if waiting:
                self._start_reader()
            else:
                self._reap()
                self._finish()
            raise AudioDeviceError(text, kind)
        self.info = msg[1]
        self._start_reader()
        return self.info

    def _expect(self, timeout: float) -> tuple | None:
        """The child's next message, or None if it died (or stayed silent ``timeout`` s)."""
        try:
            if not wait([self._evt, self._proc.sentinel], timeout):
                return None
            if self._evt.poll():
                return self._evt.recv()
        except (EOFError, OSError):
            pass
        return None

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, name="dd-audio-events", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ while it runs

    def send(self, msg: tuple) -> bool:
        """Queue a command for the child; False (never a wait) if it is gone or its pipe is full."""
        if not self.alive or self._closing:
            return False
        with self._send_lock:
            try:
                self._cmd.send(msg)
                return True
            except (OSError, ValueError, AttributeError):  # BrokenPipe, BlockingIO (full), closed
                self.send_failures += 1
                return False

    def upload(self, buffer: np.ndarray, epoch: int) -> int | None:
        """Copy ``buffer`` into a new shared-memory block and tell the child; its sample id."""
        try:
            shm = SharedMemory(create=True, size=max(1, buffer.nbytes))
        except OSError as exc:
            log.warning("cannot share a sample with the audio process: %s", exc)
            return None
        try:
            view = np.ndarray(buffer.shape, np.float32, buffer=shm.buf)
            view[...] = buffer
            del view  # no export left on the block: it can be closed later
        except Exception:
            _drop(shm)
            raise
        with self._reg_lock:
            if self._dead:
                _drop(shm)
                return None
            sid, self._next_sid = self._next_sid, self._next_sid + 1
            self._pending[sid] = shm
            self.created.append(shm.name)
        if not self.send(("load", epoch, sid, shm.name, buffer.shape[0], buffer.shape[1])):
            self._unlink(sid)
            return None
        return sid

    def unload(self, sids: list[int]) -> None:
        for i in range(0, len(sids), MAX_UNLOADS):
            self.send(("unload", sids[i:i + MAX_UNLOADS]))

    def stats(self) -> tuple[int, ...] | None:
        """The child's counters (see STATS_FORMAT), None once it is gone."""
        shm = self._stats
        try:
            return struct.unpack_from(STATS_FORMAT, shm.buf) if shm is not None else None
        except (TypeError, ValueError):  # closed meanwhile
            return None

    def _read(self) -> None:
        evt, sentinel = self._evt, self._proc.sentinel
        while True:
            try:
                if not wait([evt, sentinel], 1.0):
                    continue
                if not evt.poll():
                    break  # only the sentinel: the child is gone
                msg = evt.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(msg)
            except Exception:
                log.exception("audio process message %r", msg[:1])
        self._reap()
        self._finish()
        if not (self._closing or self._expect_exit):
            detail = f"the audio process {exit_reason(self.exitcode)}; audio is off"
            log.error("%s", detail)
            self._on_event(self, "exit", detail)

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "mapped":
            self._unlink(msg[1])
        elif kind == "open":
            self.info = msg[1]
            self._on_event(self, "open", "")
        elif kind == "error":
            _, error_kind, text, waiting = msg
            self._expect_exit = not waiting
            self._on_event(self, "error", text, error_kind, waiting)
        elif kind == "log":
            log.warning("audio process: %s", msg[1])

    # ------------------------------------------------------------------ ending

    def close(self) -> None:
        """Stop the child (it stops its stream and PortAudio first), unlink every block. Idempotent."""
        self._closing = True
        if self._proc is not None and self.alive:
            with self._send_lock:
                try:
                    self._cmd.send(("close",))
                except (OSError, ValueError, AttributeError):
                    pass
            self._reap()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(CLOSE_TIMEOUT_S)
        self._reap(kill=True)
        self._finish()

    def _reap(self, kill: bool = False) -> None:
        with self._reap_lock:
            proc = self._proc
            if proc is None or self.exitcode is not None:
                return
            if kill and proc.is_alive():
                proc.kill()
            proc.join(CLOSE_TIMEOUT_S)
            if proc.is_alive():
                log.warning("the audio process does not stop: killing it")
                proc.kill()
                proc.join(CLOSE_TIMEOUT_S)
            self.exitcode = proc.exitcode
            self.alive = False

    def _unlink(self, sid: int) -> None:
        with self._reg_lock:
            shm = self._pending.pop(sid, None)
        if shm is not None:
            _drop(shm)

    def _unlink_stats_name(self) -> None:
        shm = self._stats
        if shm is not None:
            try:
                shm.unlink()  # the mapping stays, on both sides
            except FileNotFoundError:
                pass

    def _finish(self) -> None:
        """Everything the child could still need is released: pending blocks, counters, pipes."""
        with self._reg_lock:
            self._dead = True
            pending, self._pending = self._pending, {}
            stats, self._stats = self._stats, None
        for shm in pending.values():
            _drop(shm)
        if stats is not None:
            _drop(stats)
        self.alive = False
        if self._reader is None or self._reader is threading.current_thread() or not self._reader.is_alive():
            for conn in (self._cmd, self._evt):
                if conn is not None:
                    try:
                        conn.close()
                    except OSError:
                        pass


class _Ref(weakref.ref):
    """A sample buffer's weak reference, carrying its id here and in the child."""

    __slots__ = ("key", "sid", "ready")


class MixerProxy:
    """The mixer in the audio process, seen from here (one per stream the child opens)."""

    def __init__(self, proc: AudioProcess, info: dict[str, Any]) -> None:
        self._proc = proc
        self.epoch = info["epoch"]
        self.rate, self.channels = int(info["rate"]), int(info["channels"])
        self.polyphony = info["polyphony"]
        self.master_gain = info["master_gain"]
        self._refs: dict[int, _Ref] = {}
        self._gone: list[_Ref] = []  # appended by weakref callbacks (any thread, no lock)
        self._lock = threading.Lock()
        self._last = (self.epoch, 0, 0, 0, 0, 0, 0, 0)
        self._missed = 0  # plays that could not be sent

    # ------------------------------------------------------------------ producer API (as Mixer)

    def load(self, buffer: np.ndarray) -> bool:
        """Share ``buffer`` with the audio process now, so that its first hit sends only a command."""
        check_voice(buffer, self.channels, 1.0, 0)
        return self._sid(buffer) is not None

    def play(self, buffer: np.ndarray, gain: float = 1.0, *, group: int = 0, cuts: int = 0, pad: int = 0) -> bool:
        gain = check_voice(buffer, self.channels, gain, group)
        sid = self._sid(buffer)
        played = sid is not None and self._proc.send(("play", self.epoch, sid, gain, group, int(cuts), pad))
        if not played:
            self._missed += 1
        if self._gone:
            self._flush()  # after the play is on its way
        return played

    def choke(self, cuts: int) -> bool:
        return self._proc.send(("choke", self.epoch, int(cuts)))

    def stop_all(self) -> bool:
        return self._proc.send(("stop_all", self.epoch))

    def set_master_gain(self, gain: float) -> bool:
        gain = check_gain(gain, "master gain")
        sent = self._proc.send(("master", self.epoch, gain))
        if sent:
            self.master_gain = gain
        return sent

    def active_voices(self) -> int:
        return self._stat(3)

    @property
    def underruns(self) -> int:
        return self._stat(1)

    @property
    def rendered_frames(self) -> int:
        return self._stat(2)

    @property
    def dropped(self) -> int:
        return self._stat(4) + self._missed

    @property
    def limited_blocks(self) -> int:
        return self._stat(5)

    @property
    def alive(self) -> bool:
        """Whether this proxy's stream still plays (the child runs and has not re-opened since)."""
        return self._proc.alive and self._proc.info.get("epoch") == self.epoch

    def stats(self) -> dict[str, int]:
        return {"voices": self.active_voices(), "underruns": self.underruns, "dropped": self.dropped,
                "limited_blocks": self.limited_blocks, "rendered_frames": self.rendered_frames}

    # ------------------------------------------------------------------ internals

    def _stat(self, index: int) -> int:
        values = self._proc.stats()
        if values is not None and values[0] == self.epoch:
            self._last = values
        return int(self._last[index])

    def _sid(self, buffer: np.ndarray) -> int | None:
        """The buffer's id in the child, uploading it the first time (once, whichever thread asks)."""
        key = id(buffer)
        with self._lock:
            ref = self._refs.get(key)
            mine = ref is None or ref() is not buffer
            if mine:
                ref = _Ref(buffer, self._gone.append)
                ref.key, ref.sid, ref.ready = key, None, threading.Event()
                self._refs[key] = ref
        if not mine:
            ref.ready.wait(5.0)
            return ref.sid
        try:
            ref.sid = self._proc.upload(buffer, self.epoch)
        except MixerError:
            ref.sid = None
        finally:
            ref.ready.set()
        if ref.sid is None:
            with self._lock:
                if self._refs.get(key) is ref:
                    del self._refs[key]
        return ref.sid

    def _flush(self) -> None:
        """Tell the child which samples nobody here holds any more."""
        sids = []
        while self._gone:
            ref = self._gone.pop()
            with self._lock:
                if self._refs.get(ref.key) is ref:
                    del self._refs[ref.key]
            if ref.sid is not None:
                sids.append(ref.sid)
        if sids:
            self._proc.unload(sids)

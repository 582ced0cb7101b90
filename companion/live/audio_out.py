"""The audio output: one persistent ``sounddevice.OutputStream`` whose callback runs the mixer.

By default for the live rig the stream runs in a separate audio process (:mod:`companion.live.audio_proc`):
there the PortAudio callback never waits for this process's GIL, which the engine's threads hold
while they generate. ``AudioOut(..., process=False)`` keeps the stream in this process (the GUI tests
do; it is also the fallback when the audio process cannot be started at all).

A missing device, a refused sample rate or a device that disappears never takes the companion
down: :meth:`AudioOut.open` raises :class:`AudioDeviceError` (the caller logs it and carries on with
audio disabled), :attr:`AudioOut.error` says why audio is off, and :meth:`AudioOut.reopen` tries
again (re-scanning devices, as PortAudio only sees devices present when it started). While audio is
off because the device is missing or went away (or the audio process died), it is re-opened by
itself as soon as the device is back: devices are re-scanned every ``poll_interval`` seconds, only
while no stream is open (in the audio process, or here in process-less mode), and ``on_state``
hears "open" again. sounddevice is imported on first use, so the rest of the companion runs without
PortAudio.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from companion.live.audio_device import (
    RETRY_KINDS,
    AudioDeviceError,
    OutputDevice,
    find_output_device,
    open_stream,
    rescan_devices,
)
from companion.live.mixer import Mixer

log = logging.getLogger("dd.audio")

POLL_S = 2.0  # how often a missing device is looked for
MAX_BACKOFF_S = 30.0  # restarts of an audio process that keeps dying slow down to this


_here_lock = threading.Lock()
_streams_here = 0  # streams open in this process: PortAudio must not be restarted under them


class AudioOut:
    """Plays the mixer ``mixer_factory(channels, rate)`` makes on ``device`` (a name, or None for the
    default) at ``rate`` (None: the device's default rate). ``on_state(state, detail)`` hears "open",
    "closed" and "error" (from any thread). ``process``: run the stream in the audio process (the
    factory must then be picklable, e.g. ``functools.partial(Mixer, polyphony=16)``; :attr:`mixer` is
    a :class:`companion.live.audio_proc.MixerProxy`). ``auto_reopen``: look for a missing or vanished
    device every ``poll_interval`` s and re-open when it is back."""

    def __init__(self, mixer_factory: Callable[[int, int], Mixer] = Mixer, device: str | None = None, *,
                 rate: int | None = None, blocksize: int = 0, latency: float | str = "low",
                 on_state: Callable[[str, str], None] | None = None, process: bool = False,
                 auto_reopen: bool = True, poll_interval: float = POLL_S) -> None:
        self._factory = mixer_factory
        self.device_name = device
        self.rate = rate
        self.blocksize = blocksize
        self.latency = latency
        self.process = process
        self.auto_reopen = auto_reopen
        self.poll_interval = poll_interval
        self.mixer: Any = None  # Mixer here, MixerProxy with the audio process
        self.device: OutputDevice | None = None
        self.error: str | None = "not opened yet"
        self._stream: Any = None
        self._proc: Any = None  # companion.live.audio_proc.AudioProcess
        self._info: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._on_state = on_state or (lambda state, detail: None)
        self._stopped = True  # close() was called: no automatic re-open
        self._retry_at: float | None = None
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        self._crashes = 0
        self._opened_at = 0.0
        self._closing = False

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.alive and self.error is None
        stream = self._stream
        return stream is not None and bool(stream.active)

    @property
    def pid(self) -> int | None:
        """The audio process's id (None when the stream runs here or nothing runs)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.alive else None

    def open(self) -> Any:
        """Open the stream and return its mixer; AudioDeviceError (and audio stays off) otherwise."""
        with self._lock:
            self._stopped = False
            if self.error is None and (self._stream is not None or self._proc is not None):
                return self.mixer
            try:
                mixer = self._open()
            except AudioDeviceError as exc:
                self._off(str(exc), exc.kind, waiting=self._proc is not None)
                log.error("audio disabled: %s", exc)
                failed: AudioDeviceError | None = exc
            else:
                failed = None
        if failed is not None:
            self._on_state("error", str(failed))
            raise failed
        self._on_state("open", self.describe())
        return mixer

    def _open(self, fallback: bool = True) -> Any:
        """Open here or start the audio process (lock held). ``fallback``: run the stream here when
        the process cannot start at all (not after it died: what killed it could kill us)."""
        if self._proc is not None:
            if self._proc.alive:  # waiting for its device: it reports when it is back
                raise AudioDeviceError(self.error or "waiting for the audio device", "missing")
            self._proc.close()  # died: its reader thread has cleaned up already
            self._proc = None
        if self.process:
            from companion.live.audio_proc import AudioProcess, AudioSpawnError

            proc = AudioProcess(self._factory, self.device_name, rate=self.rate, blocksize=self.blocksize,
                                latency=self.latency, retry_s=self.poll_interval if self.auto_reopen else 0.0,
                                on_event=self._child_event)
            try:
                info = proc.start()
            except AudioSpawnError as exc:
                if not fallback:
                    raise AudioDeviceError(f"the audio process could not start: {exc}", "crashed") from None
                log.warning("the audio process could not start (%s): audio runs in this process", exc)
            except AudioDeviceError:
                if proc.alive:
                    self._proc = proc  # it waits for the device itself
                raise
            else:
                self._proc = proc
                return self._child_opened(info)
        return self._open_here()

    def _open_here(self) -> Mixer:
        global _streams_here
        stream, mixer, device = open_stream(self.device_name, self.rate, self.blocksize, self.latency,
                                            self._factory, self._finished)
        with _here_lock:
            _streams_here += 1
        self._stream, self.mixer, self.device, self.error = stream, mixer, device, None
        self._info = {"rate": stream.samplerate, "channels": stream.channels, "latency": stream.latency}
        self._opened_at = time.monotonic()
        return mixer

    def _child_opened(self, info: dict[str, Any]) -> Any:
        from companion.live.audio_proc import MixerProxy

        self.mixer = MixerProxy(self._proc, info)
        self.device = OutputDevice(info["index"], info["device"], info["hostapi"], info["device_channels"],
                                   info["default_rate"])
        self._info, self.error, self._retry_at = info, None, None
        self._opened_at = time.monotonic()
        return self.mixer

    def _off(self, error: str, kind: str, *, waiting: bool = False) -> None:
        """Audio is off (lock held): keep why, and look for the device again where that may help.
        ``waiting``: the audio process looks for it itself."""
        self.error, self.mixer = error, None
        if self._stopped or not self.auto_reopen or kind not in RETRY_KINDS or waiting:
            self._retry_at = None
            return
        delay = self.poll_interval
        if kind == "crashed":  # a process that keeps dying is restarted less and less often
            self._crashes = 0 if time.monotonic() - self._opened_at > 60.0 else self._crashes
            self._crashes += 1
            delay = min(MAX_BACKOFF_S, self.poll_interval * 2 ** (self._crashes - 1))
        self._retry_at = time.monotonic() + delay
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="dd-audio-watch", daemon=True)
            self._watcher.start()
        self._wake.set()

    # ------------------------------------------------------------------ automatic re-open

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._stopped or self._retry_at is None:
                    return
                delay = self._retry_at - time.monotonic()
            if delay > 0:
                self._wake.wait(min(delay, self.poll_interval))
                self._wake.clear()
                continue
            try:
                self._retry()
            except Exception:  # never let the watcher die with audio off
                log.exception("re-opening the audio output failed")
                with self._lock:
                    self._retry_at = time.monotonic() + self.poll_interval

    def _retry(self) -> None:
        with self._lock:
            if self._stopped or self._retry_at is None:
                return
            self._retry_at = None
            self._drop_stream()  # a stream that ended with its device
            if not self.process:
                with _here_lock:
                    busy = _streams_here > 0
                try:
                    if busy:  # another stream here: restarting PortAudio would kill it; wait
                        raise AudioDeviceError(self.error or "", "missing")
                    rescan_devices()
                    find_output_device(self.device_name)
                except AudioDeviceError as exc:
                    self._off(self.error or str(exc), exc.kind)
                    return
            try:
                self._open(fallback=False)
            except AudioDeviceError as exc:
                changed = str(exc) != self.error
                self._off(str(exc), exc.kind, waiting=self._proc is not None)
                notify = ("error", str(exc)) if changed else None
            else:
                notify = ("open", self.describe())
                log.info("audio re-opened: %s", notify[1])
        if notify is not None:
            self._on_state(*notify)

    # ------------------------------------------------------------------ events

    def _finished(self) -> None:
        """PortAudio's thread: the stream ended, by close() or because the device went away. Takes no
        lock (close() may hold it while it waits for this)."""
        if self._stream is not None and not self._closing:
            self.error = f"audio device '{self.device.name if self.device else '?'}' stopped (disconnected?)"
            log.error("audio disabled: %s; looking for it again", self.error)
            self._on_state("error", self.error)
            threading.Thread(target=self._vanished, name="dd-audio-lost", daemon=True).start()

    def _vanished(self) -> None:
        with self._lock:
            if self._stream is not None and not self._closing and not self._stopped:
                self._off(self.error or "the audio stream stopped", "vanished")

    def _child_event(self, proc: Any, kind: str, detail: str, error_kind: str = "", waiting: bool = False) -> None:
        """The audio process's reader thread: it opened, lost its device, or died."""
        with self._lock:
            if proc is not self._proc or self._stopped:
                return
            if kind == "open":
                self._child_opened(proc.info)
                detail = self.describe()
                log.info("audio re-opened: %s", detail)
            else:
                if kind == "exit":
                    error_kind = "crashed"  # it keeps self._proc: the watcher closes it and starts anew
                elif not waiting:
                    self._proc = None  # it ends by itself (a refused rate...): nothing to wait for
                self._off(detail, error_kind, waiting=waiting)
                log.error("audio disabled: %s", detail)
        self._on_state("open" if kind == "open" else "error", detail)

    def check(self) -> bool:
        """Whether audio runs; notices a stream that stopped on its own (device gone)."""
        if self._proc is not None:
            return self.running
        stream = self._stream
        if stream is None:
            return False
        if not stream.active and not self._closing:
            if self.error is None:
                self.error = "the audio stream stopped"
            return False
        return True

    # ------------------------------------------------------------------ closing

    def _drop_stream(self) -> None:
        global _streams_here
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._closing = True
        try:
            stream.stop()  # plays what is buffered (close alone would drop it)
            stream.close()
        except Exception as exc:  # closing a device that vanished may fail: it is gone anyway
            log.warning("closing the audio stream: %s", exc)
        finally:
            self._closing = False
            with _here_lock:
                _streams_here -= 1

    def close(self) -> None:
        """Stop the stream (and the audio process, and the search for a missing device)."""
        with self._lock:
            self._stopped, self._retry_at = True, None
            self._wake.set()
            had = self._stream is not None or (self._proc is not None and self.error is None)
            self._drop_stream()
            proc, self._proc = self._proc, None
            self.error, self.mixer = "closed", None
        if proc is not None:
            proc.close()  # outside the lock: its reader thread may be waiting for it
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5.0)
        if had:
            self._on_state("closed", "")

    def reopen(self) -> Any:
        """Close, re-scan the devices, and open again (set ``device_name``/``rate`` first to change them).
        The new stream has a new mixer: voices that were sounding are dropped."""
        self.close()
        self._crashes = 0
        if not self.process:
            with _here_lock:
                busy = _streams_here > 0
            if not busy:
                rescan_devices()
        return self.open()

    def describe(self) -> str:
        if self.error is not None or self.device is None:
            return f"audio off: {self.error}"
        info = self._info
        where = f", in audio process {info['pid']}" if "pid" in info else ""
        return (f"audio on '{self.device.name}' ({self.device.hostapi}) at {info['rate']:g} Hz, "
                f"{info['channels']} ch, output latency {info['latency'] * 1000:.1f} ms{where}")

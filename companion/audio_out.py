"""The audio output: one persistent ``sounddevice.OutputStream`` whose callback runs the mixer.

A missing device, a refused sample rate or a device that disappears never takes the companion
down: :meth:`AudioOut.open` raises :class:`AudioDeviceError` (the caller logs it and carries on with
audio disabled), :attr:`AudioOut.error` says why audio is off, and :meth:`AudioOut.reopen` tries
again (re-scanning devices, as PortAudio only sees devices present when it started).
sounddevice is imported on first use, so the rest of the companion runs without PortAudio.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from companion.mixer import Mixer
from models.errors import DDError

log = logging.getLogger("dd.audio")


class AudioDeviceError(DDError):
    """An audio device that is missing, busy, or refuses the sample rate; or no PortAudio at all."""

    code = "audio_device"


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float

    def label(self) -> str:
        return f"{self.name} ({self.hostapi}, {self.channels} ch, {self.default_rate:g} Hz)"


def _sd() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # "PortAudio library not found"
        raise AudioDeviceError(f"audio output is unavailable: {exc} (install PortAudio, e.g. "
                               "apt-get install libportaudio2)") from None
    return sounddevice


def rescan_devices() -> None:
    """Restart PortAudio so that devices plugged in (or a JACK server started) since are seen.
    Only call it while this process has no stream open."""
    sd = _sd()
    sd._terminate()
    sd._initialize()


def terminate() -> None:
    """Shut PortAudio down (before stopping a JACK server it uses)."""
    sd = _sd()
    sd._terminate()


def output_devices() -> list[OutputDevice]:
    """Every device with output channels, as PortAudio lists them now."""
    sd = _sd()
    apis = sd.query_hostapis()
    return [OutputDevice(i, d["name"], apis[d["hostapi"]]["name"], d["max_output_channels"],
                         d["default_samplerate"])
            for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]


def find_output_device(name: str | None) -> OutputDevice:
    """The device called ``name`` (exact, then case-insensitive prefix, then substring); the default
    output device when ``name`` is None or empty."""
    devices = output_devices()
    if not devices:
        raise AudioDeviceError("no audio output device is available")
    if not name:
        default = _sd().default.device[1]
        for device in devices:
            if device.index == default:
                return device
        return devices[0]
    low = name.lower()
    for match in (lambda d: d.name == name, lambda d: d.name.lower().startswith(low), lambda d: low in d.name.lower()):
        found = [d for d in devices if match(d)]
        if found:
            return found[0]
    raise AudioDeviceError(f"audio device '{name}' not found; output devices: "
                           + "; ".join(d.label() for d in devices))


class AudioOut:
    """Plays ``mixer`` on ``device`` (a name, or None for the default) at ``rate`` (None: the
    device's default rate). ``on_state(state, detail)`` hears "open", "closed" and "error"."""

    def __init__(self, mixer_factory: Callable[[int, int], Mixer], device: str | None = None, *,
                 rate: int | None = None, blocksize: int = 0, latency: float | str = "low",
                 on_state: Callable[[str, str], None] | None = None) -> None:
        self._factory = mixer_factory
        self.device_name = device
        self.rate = rate
        self.blocksize = blocksize
        self.latency = latency
        self.mixer: Mixer | None = None
        self.device: OutputDevice | None = None
        self.error: str | None = "not opened yet"
        self._stream: Any = None
        self._lock = threading.Lock()
        self._on_state = on_state or (lambda state, detail: None)

    @property
    def running(self) -> bool:
        stream = self._stream
        return stream is not None and bool(stream.active)

    def open(self) -> Mixer:
        """Open the stream and return its mixer; AudioDeviceError (and audio stays off) otherwise."""
        with self._lock:
            if self._stream is not None:
                return self.mixer
            try:
                mixer = self._open()
            except AudioDeviceError as exc:
                self.error = str(exc)
                log.error("audio disabled: %s", exc)
                self._on_state("error", str(exc))
                raise
        self._on_state("open", self.describe())
        return mixer

    def _open(self) -> Mixer:
        sd = _sd()
        device = find_output_device(self.device_name)
        rate = int(self.rate or device.default_rate)
        channels = min(2, device.channels)
        try:
            sd.check_output_settings(device=device.index, channels=channels, dtype="float32", samplerate=rate)
        except Exception as exc:  # sounddevice raises PortAudioError or ValueError
            raise AudioDeviceError(f"audio device '{device.name}' refuses {rate} Hz, {channels} channel(s) float32: "
                                   f"{exc}; its default rate is {device.default_rate:g} Hz") from None
        mixer = self._factory(channels, rate)
        callback = _callback(mixer)
        try:
            stream = sd.OutputStream(device=device.index, samplerate=rate, channels=channels, dtype="float32",
                                     blocksize=self.blocksize, latency=self.latency, callback=callback,
                                     finished_callback=self._finished)
            stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot open audio device '{device.name}' at {rate} Hz: {exc}") from None
        self._stream, self.mixer, self.device, self.error = stream, mixer, device, None
        return mixer

    def _finished(self) -> None:
        """PortAudio's thread: the stream ended, by close() or because the device went away."""
        if self._stream is not None and not self._closing:
            self.error = f"audio device '{self.device.name if self.device else '?'}' stopped (disconnected?)"
            log.error("audio disabled: %s; reopen to try again", self.error)
            self._on_state("error", self.error)

    _closing = False

    def check(self) -> bool:
        """Whether audio runs; notices a stream that stopped on its own (device gone)."""
        stream = self._stream
        if stream is None:
            return False
        if not stream.active and not self._closing:
            if self.error is None:
                self.error = "the audio stream stopped"
            return False
        return True

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
            self._closing = True
            try:
                if stream is not None:
                    try:
                        stream.stop()  # plays what is buffered (close alone would drop it)
                        stream.close()
                    except Exception as exc:  # closing a device that vanished may fail: it is gone anyway
                        log.warning("closing the audio stream: %s", exc)
            finally:
                self._closing = False
            self.error = "closed"
        if stream is not None:
            self._on_state("closed", "")

    def reopen(self) -> Mixer:
        """Close, re-scan the devices, and open again (set ``device_name``/``rate`` first to change them).
        The new stream has a new mixer: voices that were sounding are dropped."""
        self.close()
        rescan_devices()
        return self.open()

    def describe(self) -> str:
        if self._stream is None or self.device is None:
            return f"audio off: {self.error}"
        latency = self._stream.latency
        return (f"audio on '{self.device.name}' ({self.device.hostapi}) at {self._stream.samplerate:g} Hz, "
                f"{self._stream.channels} ch, output latency {latency * 1000:.1f} ms")


def _callback(mixer: Mixer) -> Callable[..., None]:
    """The PortAudio callback: count underruns, mix. Nothing else."""
    render = mixer.render

    def callback(outdata: Any, frames: int, time: Any, status: Any) -> None:
        if status.output_underflow:
            mixer.underruns += 1
        render(outdata)

    return callback

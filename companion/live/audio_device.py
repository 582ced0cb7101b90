"""The audio device through PortAudio (sounddevice): the output devices there are, finding one by
name, and opening a stream whose callback runs a mixer. Both ends of the audio output use it: the
:class:`~companion.live.audio_out.AudioOut` in this process and the audio process
(:mod:`companion.live.audio_child`). sounddevice is imported on first use, so the rest of the
companion runs without PortAudio; without it, every call raises :class:`AudioDeviceError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from companion.live.mixer import Mixer
from models.errors import DDError

RETRY_KINDS = frozenset({"missing", "failed", "vanished", "crashed"})  # errors that may go away by themselves


class AudioDeviceError(DDError):
    """An audio device that is missing, busy, or refuses the sample rate; or no PortAudio at all.
    ``kind``: unavailable, missing, refused, failed (cannot open), vanished, crashed (audio process)."""

    code = "audio_device"

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind


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
                               "apt-get install libportaudio2)", "unavailable") from None
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
        raise AudioDeviceError("no audio output device is available", "missing")
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
                           + "; ".join(d.label() for d in devices), "missing")


def open_stream(device_name: str | None, rate: int | None, blocksize: int, latency: float | str,
                mixer_factory: Callable[[int, int], Mixer],
                finished: Callable[[], None]) -> tuple[Any, Mixer, OutputDevice]:
    """Find the device, check the rate, build the mixer and start a stream whose callback runs it
    (here, or in the audio process: both use this). AudioDeviceError names what went wrong."""
    sd = _sd()
    device = find_output_device(device_name)
    rate = int(rate or device.default_rate)
    channels = min(2, device.channels)
    try:
        sd.check_output_settings(device=device.index, channels=channels, dtype="float32", samplerate=rate)
    except Exception as exc:  # sounddevice raises PortAudioError or ValueError
        raise AudioDeviceError(f"audio device '{device.name}' refuses {rate} Hz, {channels} channel(s) float32: "
                               f"{exc}; its default rate is {device.default_rate:g} Hz", "refused") from None
    mixer = mixer_factory(channels, rate)
    stream = None
    try:
        stream = sd.OutputStream(device=device.index, samplerate=rate, channels=channels, dtype="float32",
                                 blocksize=blocksize, latency=latency, callback=_callback(mixer),
                                 finished_callback=finished)
        stream.start()
    except Exception as exc:
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
        raise AudioDeviceError(f"cannot open audio device '{device.name}' at {rate} Hz: {exc}", "failed") from None
    return stream, mixer, device


def _callback(mixer: Mixer) -> Callable[..., None]:
    """The PortAudio callback: count underruns, mix. Nothing else."""
    render = mixer.render

    def callback(outdata: Any, frames: int, time: Any, status: Any) -> None:
        if status.output_underflow:
            mixer.underruns += 1
        render(outdata)

    return callback

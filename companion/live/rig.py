"""The live rig: MIDI pads in, the pad rack, the mixer and the audio output, wired to the engine.

``attach_live(engine, folder, midi_port=..., audio_device=...)`` builds and starts it. A missing
audio device or MIDI port never stops the companion: audio stays off until the device is back (it is
looked for every 2 s and re-opened by itself; ``reopen_audio`` tries at once), and the MIDI input
waits for its port and reconnects by itself. The audio stream runs in its own process by default
(``process=False``: in this one), so generating never starves the audio callback of the GIL.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from companion.engine.engine import Engine
from companion.live.audio_device import AudioDeviceError
from companion.live.audio_out import AudioOut
from companion.live.midi_in import VIRTUAL_NAME, MidiInput
from companion.live.mixer import Mixer
from companion.live.padrack import PadRack
from companion.output.folder import SampleFolder
from models.errors import DDError

log = logging.getLogger("dd.live")

# The audio callback needs the GIL once per period; a busy Python thread hands it over only after the
# switch interval (5 ms by default, about one 256-frame period at 48 kHz): shorten it while live.
SWITCH_INTERVAL_S = 0.0005


class LiveRig:
    """Engine + pad rack + mixer + audio output + MIDI input. ``midi_port`` None: a virtual port
    called ``virtual_name``; ``audio_device`` None: the default output device."""

    def __init__(self, engine: Engine, folder: SampleFolder | None = None, *, midi_port: str | None = None,
                 audio_device: str | None = None, rate: int | None = None, blocksize: int = 0,
                 latency: float | str = "low", polyphony: int = 32, master_gain: float = 1.0,
                 pads: Mapping[str, Any] | None = None, midi: bool = True, virtual_name: str = VIRTUAL_NAME,
                 poll_interval: float = 1.0, on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 process: bool = True, audio_poll_interval: float = 2.0) -> None:
        self.engine = engine
        self.folder = folder or engine.folder
        self._on_event = on_event or (lambda kind, info: None)
        self.rack = PadRack(engine, pads, on_event=self._rack_event)
        self.audio = AudioOut(functools.partial(Mixer, polyphony=polyphony, master_gain=master_gain), audio_device,
                              rate=rate, blocksize=blocksize, latency=latency, on_state=self._audio_state,
                              process=process, poll_interval=audio_poll_interval)
        self.midi = MidiInput(midi_port, self.rack.handle, channel=None, virtual_name=virtual_name,
                              poll_interval=poll_interval,
                              on_state=lambda state, detail: self._on_event(f"midi_{state}", {"detail": detail}))
        self._midi_enabled = midi
        self.started = False

    def _audio_state(self, state: str, detail: str) -> None:
        """Any thread: audio came (back) or went: the pads play into the new mixer, or nowhere."""
        self.rack.attach_output(self.audio.mixer if state == "open" else None)
        if state == "open":
            self._preload(self.audio.mixer)
        self._on_event(f"audio_{state}", {"detail": detail})

    def _rack_event(self, kind: str, info: dict[str, Any]) -> None:
        """A pad's new sample goes to the audio process now, not at its first hit."""
        if kind == "loaded":
            mixer = self.mixer
            if mixer is not None:
                try:
                    pad = self.rack.pad(info["note"])
                    sample = pad.stock[-1] if info.get("use") == "stock" and pad.stock else pad.current
                    if sample is not None and sample.audio.shape[1] == mixer.channels:
                        mixer.load(sample.audio)
                except (DDError, IndexError):
                    pass
        self._on_event(kind, info)

    def _preload(self, mixer: Any) -> None:
        if mixer is None:
            return
        for pad in self.rack.pads():
            try:
                samples = [pad.current, *list(pad.stock)]
            except RuntimeError:  # the rack's worker changed the stock meanwhile: its events load those
                samples = [pad.current]
            for sample in samples:
                if sample is not None and sample.audio.shape[1] == mixer.channels:
                    try:
                        mixer.load(sample.audio)
                    except DDError:
                        pass

    @property
    def mixer(self) -> Mixer | None:
        return self.audio.mixer if self.audio.error is None else None

    def start(self) -> None:
        """Open the audio output (or go on without it), start the rack, then listen to MIDI."""
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, SWITCH_INTERVAL_S))
        try:
            self.rack.attach_output(self.audio.open())
        except AudioDeviceError:
            self.rack.attach_output(None)  # the error is logged and kept in self.audio.error
        self.rack.start()
        if self._midi_enabled:
            self.midi.start()
        self.started = True

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._midi_enabled:
            self.midi.stop()
        self.rack.stop()
        self.audio.close()
        sys.setswitchinterval(self._switch)

    def reopen_audio(self, device: str | None = None, rate: int | None = None) -> bool:
        """Open the audio output again (another device or rate when given); False if it still fails."""
        if device is not None:
            self.audio.device_name = device
        if rate is not None:
            self.audio.rate = rate
        self.rack.attach_output(None)
        try:
            self.rack.attach_output(self.audio.reopen())
        except AudioDeviceError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        mixer = self.audio.mixer
        return {
            "audio": self.audio.describe(),
            "midi": f"{self.midi.state}: {self.midi.port_name or self.midi.wanted or self.midi.virtual_name}",
            "underruns": mixer.underruns if mixer else 0,
            "voices": mixer.active_voices() if mixer else 0,
            "pads_ready": sum(1 for p in self.rack.pads() if p.stock or p.current),
        }

    def describe(self) -> list[str]:
        """Lines for ``serve`` to print."""
        status = self.status()
        return [status["audio"], f"MIDI {status['midi']}",
                f"pads: {len(self.rack.pads())} ({self.rack.config['behaviour']} sample on every hit)"
                if self.rack.config["behaviour"] == "new" else f"pads: {len(self.rack.pads())} (audition, then keep)"]


def attach_live(engine: Engine, folder: SampleFolder | None = None, *, midi_port: str | None = None,
                audio_device: str | None = None, **options: Any) -> LiveRig:
    """Build a :class:`LiveRig` on a started engine and start it; ``options`` go to LiveRig."""
    rig = LiveRig(engine, folder, midi_port=midi_port, audio_device=audio_device, **options)
    rig.start()
    return rig

"""MIDI input through mido: a named port (matched by name prefix) or a virtual "DD Companion" port.

Port names carry numbers that change between sessions (``nanoPAD2:nanoPAD2 MIDI 1 20:0``), so a
port is chosen by the first name that starts with the configured text (then, failing that, that
contains it). Nothing tells an open rtmidi port that its device was unplugged, so a watcher thread
polls the port list: when the port is gone it is closed and reported ("unplugged"), and when a
matching port comes back it is opened again ("reconnected"). Errors are reported, never raised into
the companion. Messages arrive on rtmidi's thread: note-on with velocity 0 becomes a note-off, the
channel filter (omni by default) applies, and the rest goes to ``on_message``, which must be quick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from models.errors import DDError

log = logging.getLogger("dd.midi")

VIRTUAL_NAME = "DD Companion"

MessageHandler = Callable[[Any], None]
StateHandler = Callable[[str, str], None]


class MidiPortError(DDError):
    """A MIDI port that does not exist or cannot be opened, or no MIDI backend at all."""

    code = "midi_port"


def _mido() -> Any:
    try:
        import mido

        mido.backend.module  # noqa: B018 -- loads the backend now, so a missing rtmidi shows here
    except ImportError as exc:
        raise MidiPortError(f"MIDI input is unavailable: {exc} (pip install mido python-rtmidi)") from None
    return mido


def input_names() -> list[str]:
    """The MIDI input ports the backend sees now."""
    try:
        return list(_mido().get_input_names())
    except MidiPortError:
        raise
    except Exception as exc:  # rtmidi raises its own SystemError subclasses
        raise MidiPortError(f"cannot list MIDI inputs: {exc}") from None


def match_port(wanted: str, names: list[str]) -> str | None:
    """The first of ``names`` equal to, then starting with, then containing ``wanted`` (any case)."""
    low = wanted.lower()
    for test in (lambda n: n == wanted, lambda n: n.lower().startswith(low), lambda n: low in n.lower()):
        for name in names:
            if test(name):
                return name
    return None


def check_channel(channel: int | None) -> int | None:
    """None (omni) or a MIDI channel 0..15, as mido numbers them."""
    if channel is None or channel == -1:
        return None
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 15:
        raise MidiPortError(f"MIDI channel must be in 0..15 (or -1 / None for omni), got {channel!r}")
    return channel


class MidiInput:
    """Listens to ``port`` (None: a virtual port called ``virtual_name``) and hands messages to
    ``on_message``; ``on_state(state, detail)`` hears open, waiting, unplugged, reconnected, error."""

    def __init__(self, port: str | None, on_message: MessageHandler, *, channel: int | None = None,
                 virtual_name: str = VIRTUAL_NAME, poll_interval: float = 1.0,
                 on_state: StateHandler | None = None) -> None:
        self.wanted = port
        self.channel = check_channel(channel)
        self.virtual_name = virtual_name
        self.poll_interval = poll_interval
        self.on_message = on_message
        self.port_name: str | None = None
        self.state = "closed"
        self.received = 0
        self._on_state = on_state or (lambda state, detail: None)
        self._port: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Open the port (or start waiting for it) and watch it; never raises for a missing port."""
        self._stop.clear()
        self._try_open(first=True)
        if self.wanted is not None:
            self._watcher = threading.Thread(target=self._watch, name="dd-midi-watch", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
            self._watcher = None
        self._close()
        self._set_state("closed", "")

    # ------------------------------------------------------------------ opening and watching

    def _try_open(self, first: bool = False) -> None:
        try:
            mido = _mido()
            if self.wanted is None:
                port = mido.open_input(self.virtual_name, virtual=True, callback=self._receive)
                name = self.virtual_name
            else:
                name = match_port(self.wanted, input_names())
                if name is None:
                    if first:
                        self._set_state("waiting", f"MIDI input '{self.wanted}' not found; waiting for it "
                                        f"(inputs now: {', '.join(input_names()) or 'none'})")
                    return
                port = mido.open_input(name, callback=self._receive)
        except MidiPortError as exc:
            self._set_state("error", str(exc))
            return
        except Exception as exc:  # rtmidi: no virtual ports on Windows, a busy port...
            what = f"virtual MIDI port '{self.virtual_name}'" if self.wanted is None else f"MIDI input '{self.wanted}'"
            hint = " (virtual ports are not supported on Windows: use loopMIDI and --midi NAME)" if self.wanted is None else ""
            self._set_state("error", f"cannot open {what}: {exc}{hint}")
            return
        with self._lock:
            self._port, self.port_name = port, name
        self._set_state("open" if first else "reconnected", name)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                names = input_names()
            except MidiPortError as exc:
                log.warning("%s", exc)
                continue
            with self._lock:
                current = self.port_name if self._port is not None else None
            if current is not None and current not in names:
                self._close()
                self._set_state("unplugged", f"MIDI input '{current}' disappeared; waiting for it to come back")
            elif current is None and match_port(self.wanted, names) is not None:
                self._try_open()

    def _close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # closing a vanished device may fail; it is closed for us either way
                log.debug("closing MIDI port: %s", exc)

    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        level = logging.WARNING if state in ("waiting", "unplugged", "error") else logging.INFO
        log.log(level, "MIDI %s: %s", state, detail)
        try:
            self._on_state(state, detail)
        except Exception:
            log.exception("MIDI state listener failed")

    # ------------------------------------------------------------------ messages (rtmidi's thread)

    def _receive(self, message: Any) -> None:
        channel = getattr(message, "channel", None)
        if self.channel is not None and channel is not None and channel != self.channel:
            return
        if message.type == "note_on" and message.velocity == 0:
            message = type(message)("note_off", channel=message.channel, note=message.note, velocity=64,
                                    time=message.time)
        self.received += 1
        try:
            self.on_message(message)
        except Exception:  # a handler bug must not kill rtmidi's thread
            log.exception("handling MIDI %s failed", message)

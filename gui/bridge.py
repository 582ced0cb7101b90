"""The one object between the window and the companion: calls go in as methods, news comes out as signals.

The companion (engine, pool, OSC server, pad rack, mixer, MIDI input) runs in its own threads. Every
method here only queues work or reads a snapshot, so it returns at once and the window never blocks;
engine and rack events arrive on their threads and are re-emitted as Qt signals, which Qt delivers
in the GUI thread. Errors never raise into the window: they come out of :attr:`Bridge.error` as
readable text (and methods return None/False).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from companion.config.settings import PARAM_KEYS, Settings, save_settings
from companion.engine.jobs import JobEvent
from companion.engine.requests import GenerateRequest, LoadModelRequest, MorphRequest, VariationRequest
from models.errors import DDError

log = logging.getLogger("dd.gui")

PAD_STATES = ("empty", "rendering", "ready", "locked", "error")


@dataclass(frozen=True)
class PadView:
    """What a pad widget shows: the pad's meaning, its sample and its state (one of PAD_STATES)."""

    note: int
    category: str | None
    state: str
    path: Path | None = None
    seed: int | None = None
    audio: np.ndarray | None = None  # [frames, channels] at the output rate
    error: str | None = None


@dataclass(frozen=True)
class JobView:
    """One engine job as the history panel shows it; ``event`` is queued, progress, done or error."""

    id: int
    kind: str
    event: str
    origin: str
    category: str | None
    fraction: float = 0.0
    paths: tuple[Path, ...] = ()
    seeds: tuple[int, ...] = ()
    error: str | None = None
    recipe: str = ""


def job_view(event: JobEvent) -> JobView:
    """A plain, thread-safe copy of what the panel needs from an engine event."""
    job, plan = event.job, event.job.plan
    options = plan.options
    recipe = ""
    if options is not None:
        recipe = f"{options.sampler} x {options.steps}"
        if options.guidance not in (None, 1.0):
            recipe += f", guidance {options.guidance:g}"
        if plan.strength is not None:
            recipe += f", strength {plan.strength:g}"
    if plan.kind == "load":
        recipe = str(plan.model or "default model")
    result = event.result
    return JobView(job.id, plan.kind, event.kind, job.origin, plan.category, event.fraction,
                   tuple(result.paths) if result else (), tuple(result.seeds) if result else (),
                   str(event.error) if event.error is not None else None, recipe)


class Bridge(QObject):
    """See the module docstring. ``companion`` is a started or unstarted
    :class:`companion.service.resident.Companion`; ``settings_file`` is where :meth:`save` writes."""

    job_changed = Signal(object)  # JobView
    pad_changed = Signal(int)  # note: its sample or state changed
    pads_reset = Signal()  # the model changed: every pad changes
    pad_played = Signal(int, int)  # note, velocity
    model_changed = Signal(object)  # ModelFacts
    status_changed = Signal(dict)
    learned = Signal(dict)
    error = Signal(str)
    saved = Signal(str)  # the settings file written

    def __init__(self, companion: Any, settings_file: Path | None = None, *, keep: dict[str, Any] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.companion = companion
        self.settings_file = settings_file
        self.keep = dict(keep or {})  # settings saved as they were in the file (the window forces live = 1)
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(500)
        self._status_timer.timeout.connect(self._poll_status)
        self._last_status: dict[str, Any] = {}
        self.errors: list[str] = []  # the latest 50 error messages, oldest first

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the companion (loads the model: errors propagate) and listen to it."""
        self.companion.start()
        self.companion.engine.add_listener(self._on_job)
        if self.rack is not None:
            self.rack.add_listener(self._on_pad_event)
        self._status_timer.start()
        live = self.companion.live
        if live is not None and live.audio.error is not None:
            self.report(f"audio is off: {live.audio.error} (choose a device in Settings)")
        self._poll_status()

    def stop(self) -> None:
        self._status_timer.stop()
        self.companion.engine.remove_listener(self._on_job)
        if self.rack is not None:
            self.rack.remove_listener(self._on_pad_event)
        self.companion.stop()

    @property
    def rack(self) -> Any:
        live = self.companion.live
        return live.rack if live is not None else None

    @property
    def settings(self) -> Settings:
        return self.companion.settings

    # ------------------------------------------------------------------ reading

    def model(self) -> Any:
        return self.companion.engine.model

    def categories(self) -> list[str]:
        model = self.model()
        return list(model.categories) if model else []

    def param(self, name: str) -> Any:
        return self.companion.engine.get_param(name)

    def pad_notes(self) -> list[int]:
        return [p.note for p in self.rack.pads()] if self.rack is not None else []

    def pad_view(self, note: int) -> PadView:
        rack = self.rack
        pad = rack.pad(note)
        sample = rack.shown(note)
        if pad.error:
            state = "error"
        elif pad.locked_seed is not None:
            state = "locked"
        elif sample is not None:
            state = "ready"
        elif pad.pending or self.companion.engine.model is not None:
            state = "rendering"
        else:
            state = "empty"
        return PadView(note, pad.category, state, sample.path if sample else None, sample.seed if sample else None,
                       sample.audio if sample else None, pad.error)

    def status(self) -> dict[str, Any]:
        """Model, backend, OSC endpoint, MIDI, audio and the last error, as display strings; the guidance in
        effect, as a number."""
        engine = self.companion.engine
        st = engine.status()
        host, port = self.companion.server.address
        info: dict[str, Any] = {
            "model": st.model or "no model",
            "runtime": st.runtime,
            "engine": st.state,
            "queued": st.queued,
            "guidance": engine.get_param("guidance"),  # in effect: the live parameter, else the model's
            "osc": f"udp://{host}:{port}",
            "oscquery": self.companion.oscquery.url if self.companion.oscquery is not None else "off",
            "midi": "off",
            "audio": "off",
            "underruns": 0,
            "error": self.errors[-1] if self.errors else "",
        }
        live = self.companion.live
        if live is not None:
            s = live.status()
            info.update(midi=s["midi"], audio=s["audio"], underruns=s["underruns"])
        return info

    # ------------------------------------------------------------------ actions (never block)

    def _try(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (DDError, ValueError, OSError) as exc:
            self.report(f"{what}: {exc}")
            return None

    def report(self, message: str) -> None:
        """Show ``message`` as the latest error (status bar and error line)."""
        log.warning("%s", message)
        self.errors = [*self.errors[-49:], message]
        self.error.emit(message)

    def generate(self, category: str | None, *, count: int = 1, seed: int | None = None, sampler: str | None = None,
                 steps: int | None = None, seconds: float | None = None, guidance: float | None = None) -> int | None:
        request = GenerateRequest(category, count=count, seed=seed, sampler=sampler, steps=steps, seconds=seconds,
                                  guidance=guidance, fresh=True, origin="gui")
        job = self._try("generate", lambda: self.companion.engine.submit(request))
        return job.id if job else None

    def vary(self, source: str | Path, *, strength: float | None = None, count: int = 1, seed: int | None = None,
             category: str | None = None, sampler: str | None = None, steps: int | None = None,
             guidance: float | None = None) -> int | None:
        request = VariationRequest(str(source), strength=strength, count=count, seed=seed, category=category,
                                   sampler=sampler, steps=steps, guidance=guidance, origin="gui")
        job = self._try("variation", lambda: self.companion.engine.submit(request))
        return job.id if job else None

    def morph(self, source_a: str | Path, source_b: str | Path, *, frames: int = 8, category: str | None = None,
              steps: int | None = None) -> int | None:
        request = MorphRequest(str(source_a), str(source_b), frames=frames, category=category, steps=steps,
                               origin="gui")
        job = self._try("morph", lambda: self.companion.engine.submit(request))
        return job.id if job else None

    def cancel(self, job_id: int) -> bool:
        return self._try("cancel", lambda: self.companion.engine.cancel(job_id)) is not None

    def load_model(self, model: str | Path | None) -> int | None:
        """Switch models in the background; on failure the current model stays loaded (error signal)."""
        options = self.companion.load_options
        request = LoadModelRequest(None if model is None else str(model), origin="gui", **options)
        job = self._try("load model", lambda: self.companion.engine.submit(request))
        return job.id if job else None

    def set_param(self, name: str, value: Any) -> Any:
        return self._try(f"set {name}", lambda: self.companion.engine.set_param(name, value))

    def play_pad(self, note: int, velocity: int = 100) -> bool:
        if self.rack is None:
            self.report("pads need the live rig (audio and MIDI)")
            return False
        return bool(self._try(f"pad {note}", lambda: self.rack.hit(note, velocity)))

    def pad_action(self, action: str, note: int) -> None:
        if self.rack is not None:
            self._try(f"pad {note} {action}", lambda: self.rack.act(action, note))

    def audition(self, path: str | Path) -> None:
        if self.rack is not None:
            self._try("audition", lambda: self.rack.audition(path))

    def learn(self, target: str) -> bool:
        """Arm MIDI learn for ``target`` (pad:<note>, modifier:<name>, param:<name>); :attr:`learned` fires."""
        if self.rack is None:
            self.report("MIDI learn needs the live rig")
            return False
        future = self._try("MIDI learn", lambda: self.rack.learn(target))
        if future is None:
            return False
        future.add_done_callback(lambda f: None if f.cancelled() else self.learned.emit(f.result()))
        return True

    def cancel_learn(self) -> None:
        if self.rack is not None:
            self.rack.cancel_learn()

    def reopen_audio(self, device: str | None) -> bool:
        live = self.companion.live
        if live is None:
            return False
        ok = bool(live.reopen_audio(device or ""))
        if not ok:
            self.report(f"audio: {live.audio.error}")
        return ok

    def save(self, changes: dict[str, Any] | None = None) -> Path | None:
        """Apply ``changes`` to the settings (checked) and write the settings file with everything now in
        effect (live parameters, audio device, the pad map with MIDI-learned bindings). The live
        parameters apply at once; the folder, OSC, MIDI port and backend at the next start."""
        changes = dict(changes or {})
        try:
            settings = self.companion.settings_in_effect().updated({**changes, **self.keep})
            path = save_settings(settings, self.settings_file)
        except (DDError, ValueError) as exc:
            self.report(f"settings: {exc}")
            return None
        self.companion.settings = settings.updated({"live": self.companion.settings.live})
        for key in PARAM_KEYS:
            if key in changes:
                self.set_param(key, getattr(settings, key))
        self.saved.emit(str(path))
        return path

    # ------------------------------------------------------------------ events (companion threads)

    def _on_job(self, event: JobEvent) -> None:
        view = job_view(event)
        self.job_changed.emit(view)
        if event.kind == "error" and view.error and "cancel" not in view.error:
            self.report(f"job {view.id} ({view.kind}): {view.error}")
        if view.kind == "load" and event.kind == "done":
            self.model_changed.emit(self.companion.engine.model)

    def _on_pad_event(self, kind: str, info: dict[str, Any]) -> None:
        note = info.get("note")
        if kind == "models":
            self.pads_reset.emit()
        elif kind == "played" and note is not None:
            self.pad_played.emit(note, int(info.get("velocity", 100)))
            self.pad_changed.emit(note)
        elif kind == "learned":
            pass  # the learn future reports it
        elif kind == "error":
            self.report(info.get("message", "pad error"))
            if note is not None:
                self.pad_changed.emit(note)
        elif note is not None:
            self.pad_changed.emit(note)

    def _poll_status(self) -> None:
        try:
            status = self.status()
        except Exception as exc:  # the status line must never take the window down
            log.exception("status failed")
            status = {"error": str(exc)}
        if status != self._last_status:
            self._last_status = status
            self.status_changed.emit(status)

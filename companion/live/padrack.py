"""The pad rack: MIDI notes play pads; each pad keeps its current sample and a small stock of new ones.

A hit is answered from memory at once: the pad's next stocked sample (behaviour ``new``) or its
current one (``keep``: audition with regenerate, then keep it) goes to the mixer with a velocity
gain, in the MIDI thread, in microseconds. Everything slow happens in the rack's worker thread:
engine requests to refill the stocks (live ``GenerateRequest`` s, mostly answered from the engine's
pool; their files land in the watched folder like any other), reading finished files, and
resampling them with soxr to the output's rate and channels. A held modifier turns a hit into
regenerate / variation of the current sound / lock seed; mapped CCs set engine parameters; a
program change switches kit. MIDI learn: :meth:`PadRack.learn` arms a target, the next note or CC
binds it. The configuration is plain data (:mod:`companion.config.padmap`), saved with :meth:`to_config`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from companion.config.padmap import MODIFIERS, PARAMS, PadMapError, check_config, param_value
from companion.config.pads import PadError, pad_category
from companion.engine.engine import Engine
from companion.engine.jobs import JobEvent
from companion.engine.requests import BusyError, GenerateRequest, VariationRequest
from companion.live.mixer import Mixer, group_mask
from models.audio_io import load_audio
from models.errors import DDError

log = logging.getLogger("dd.pads")

ORIGIN = "midi"
MAX_IN_FLIGHT = 2  # stock requests queued at once: leaves the engine's live queue to everyone else
RETRY_S = 0.25


@dataclass
class PadSample:
    """A sound ready to play: ``audio`` float32 ``[frames, channels]`` at the output rate."""

    audio: np.ndarray
    path: Path
    seed: int | None


@dataclass
class Pad:
    note: int
    category: str | None  # the configured meaning (kick, open_hat...)
    choke: int = 0
    cuts: tuple[int, ...] = ()
    model_category: str | None = None  # the loaded model's spelling; None for unconditional models
    error: str | None = None  # why the pad cannot render with the loaded model
    current: PadSample | None = None
    stock: deque[PadSample] = field(default_factory=deque)
    locked_seed: int | None = None
    pending: int = 0  # stock requests in flight
    hits: int = 0
    repeats: int = 0  # hits that found the stock empty and played the current sample again


class PadRack:
    """See the module docstring. ``on_event(kind, info)`` (and :meth:`add_listener` s) hear played, current,
    loaded, locked, learned, param, kit, models, auditioned and error."""

    def __init__(self, engine: Engine, config: Mapping[str, Any] | None = None, *,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.engine = engine
        self.config = check_config(config)
        self._pads: dict[int, Pad] = {}
        self._lock = threading.RLock()
        self._tasks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._mixer: Mixer | None = None
        self._rate, self._channels = 48000, 2
        self._held: set[str] = set()
        self._learn: tuple[str, Future] | None = None
        self._in_flight = 0
        self._pending_params: dict[str, int | float] = {}
        self._on_event = on_event or (lambda kind, info: None)
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._build_pads(self.config["pads"])

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self.engine.add_listener(self._engine_event)
        self._worker = threading.Thread(target=self._work, name="dd-padrack", daemon=True)
        self._worker.start()
        self._tasks.put(("models", None))

    def stop(self) -> None:
        self.engine.remove_listener(self._engine_event)
        if self._worker is not None:
            self._tasks.put(("stop", None))
            self._worker.join(10.0)
            self._worker = None

    def attach_output(self, mixer: Mixer | None) -> None:
        """Play through ``mixer`` (None: audio off); samples are re-read at its rate and channels."""
        with self._lock:
            self._mixer = mixer
            changed = mixer is not None and (mixer.rate, mixer.channels) != (self._rate, self._channels)
            if mixer is not None:
                self._rate, self._channels = mixer.rate, mixer.channels
        if changed:
            self._tasks.put(("reload", None))

    @property
    def output_rate(self) -> int:
        return self._rate

    def pad(self, note: int) -> Pad:
        try:
            return self._pads[note]
        except KeyError:
            raise PadError(f"no pad on note {note}; pads: {', '.join(map(str, sorted(self._pads)))}") from None

    def pads(self) -> list[Pad]:
        return [self._pads[n] for n in sorted(self._pads)]

    # ------------------------------------------------------------------ MIDI in (rtmidi's thread)

    def handle(self, message: Any) -> None:
        """One mido message (channel filter already applied by the MIDI input, or here)."""
        channel = self.config["channel"]
        if channel >= 0 and getattr(message, "channel", channel) != channel:
            return
        kind = message.type
        if kind in ("note_on", "control_change") and self._learn is not None:
            if self._bind_learned(message):
                return
        if kind == "note_on":
            if not self._modifier_input("note", message.note, True):
                self.hit(message.note, message.velocity)
        elif kind == "note_off":
            self._modifier_input("note", message.note, False)
        elif kind == "control_change":
            if not self._modifier_input("cc", message.control, message.value >= 64):
                self._control(message.control, message.value)
        elif kind == "program_change":
            self._tasks.put(("kit", message.program))

    def hit(self, note: int, velocity: int = 100) -> bool:
        """Play pad ``note`` (or apply the held modifier to it); False when nothing could play now."""
        pad = self._pads.get(note)
        if pad is None:
            return False
        held = next((m for m in MODIFIERS if m in self._held), None)
        if held is not None:
            self._tasks.put((held, (pad, velocity)))
            return True
        with self._lock:
            pad.hits += 1
            sample = None
            if self.config["behaviour"] == "new" and pad.locked_seed is None and pad.stock:
                sample = pad.current = pad.stock.popleft()
            elif pad.current is not None:
                sample = pad.current
                if self.config["behaviour"] == "new" and pad.locked_seed is None:
                    pad.repeats += 1
            elif pad.stock:
                sample = pad.current = pad.stock.popleft()
        self._tasks.put(("fill", None))
        if sample is None:
            self._event("error", note=note, message=pad.error or f"pad {note} has no sample yet")
            return False
        played = self._play(pad, sample, velocity)
        self._event("current", note=note, path=str(sample.path), seed=sample.seed)
        return played

    def velocity_gain(self, velocity: int) -> float:
        return (max(0, min(127, velocity)) / 127.0) ** self.config["velocity_curve"]

    def _play(self, pad: Pad, sample: PadSample, velocity: int) -> bool:
        mixer = self._mixer
        if mixer is None or sample.audio.shape[1] != mixer.channels:
            return False
        played = mixer.play(sample.audio, self.velocity_gain(velocity), group=pad.choke,
                            cuts=group_mask(pad.cuts), pad=pad.note)
        self._event("played", note=pad.note, path=str(sample.path), seed=sample.seed, velocity=velocity)
        return played

    def _modifier_input(self, kind: str, number: int, down: bool) -> bool:
        for name, binding in self.config["modifiers"].items():
            if binding["type"] == kind and binding["number"] == number:
                (self._held.add if down else self._held.discard)(name)
                return True
        return False

    def _control(self, number: int, value: int) -> None:
        for entry in self.config["params"]:
            if entry["number"] == number:
                with self._lock:
                    first = not self._pending_params
                    self._pending_params[entry["param"]] = param_value(entry, value)
                if first:  # knobs send bursts: apply the latest value once they settle a little
                    threading.Timer(0.1, self._tasks.put, args=(("params", None),)).start()

    # ------------------------------------------------------------------ verbs for the window and OSC

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Also tell ``listener(kind, info)`` every event (called from the rack's and MIDI threads)."""
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        self._listeners = [x for x in self._listeners if x is not listener]

    def act(self, action: str, note: int, velocity: int = 100) -> None:
        """Apply ``action`` (regenerate, variation or lock_seed) to pad ``note``, as a hit with that
        modifier held does; the result plays and becomes the pad's current sample."""
        if action not in MODIFIERS:
            raise PadMapError(f"unknown pad action {action!r}; actions are: {', '.join(MODIFIERS)}")
        self._tasks.put((action, (self.pad(note), velocity)))

    def audition(self, path: str | Path, velocity: int = 100) -> None:
        """Play any audio file once (read and resampled in the rack's worker, not the caller's thread)."""
        self._tasks.put(("audition", (Path(path), velocity)))

    def shown(self, note: int) -> PadSample | None:
        """What the pad stands for now: its current sample, else the one its next hit will play."""
        pad = self.pad(note)
        with self._lock:
            return pad.current or (pad.stock[0] if pad.stock else None)

    def _do_audition(self, arg: tuple[Path, int]) -> None:
        path, velocity = arg
        try:
            sample = self._load(path, None)
        except DDError as exc:
            self._event("error", message=str(exc))
            return
        mixer = self._mixer
        if mixer is None or sample.audio.shape[1] != mixer.channels:
            self._event("error", message=f"cannot audition {path.name}: audio output is off")
            return
        mixer.play(sample.audio, self.velocity_gain(velocity))
        self._event("auditioned", path=str(path))

    # ------------------------------------------------------------------ MIDI learn

    def learn(self, target: str) -> Future:
        """Arm ``target`` (``pad:<note>``, ``modifier:<name>`` or ``param:<name>``); the next note or CC
        binds it. The future gets the new binding as a dict; a new learn cancels the previous one."""
        kind, _, name = target.partition(":")
        valid = (kind == "pad" and name.isdigit() and int(name) in self._pads) or \
            (kind == "modifier" and name in MODIFIERS) or (kind == "param" and name in PARAMS)
        if not valid:
            raise PadMapError(f"cannot learn {target!r}: targets are pad:<note> (pads: "
                              f"{', '.join(map(str, sorted(self._pads)))}), modifier:<{'|'.join(MODIFIERS)}>, "
                              f"param:<{'|'.join(PARAMS)}>")
        future: Future = Future()
        with self._lock:
            previous, self._learn = self._learn, (target, future)
        if previous is not None:
            previous[1].cancel()
        return future

    def cancel_learn(self) -> None:
        with self._lock:
            previous, self._learn = self._learn, None
        if previous is not None:
            previous[1].cancel()

    def _bind_learned(self, message: Any) -> bool:
        if message.type == "note_on" and message.velocity == 0:
            return False
        with self._lock:
            if self._learn is None:
                return False
            (target, future), self._learn = self._learn, None
            kind, _, name = target.partition(":")
            number = message.note if message.type == "note_on" else message.control
            btype = "note" if message.type == "note_on" else "cc"
            if kind == "pad":
                if btype != "note":
                    self._learn = (target, future)  # pads need a note: keep listening
                    return False
                self._move_pad(int(name), number)
                binding = {"target": target, "type": "note", "number": number}
            elif kind == "modifier":
                self.config["modifiers"][name] = {"type": btype, "number": number}
                binding = {"target": target, "type": btype, "number": number}
            else:
                if btype != "cc":
                    self._learn = (target, future)
                    return False
                entry = next((e for e in self.config["params"] if e["param"] == name), None)
                if entry is None:
                    entry = {"type": "cc", "param": name, "low": 0, "high": 1}
                    self.config["params"].append(entry)
                entry["number"] = number
                binding = {"target": target, "type": "cc", "number": number}
        future.set_result(binding)
        self._event("learned", **binding)
        return True

    def _move_pad(self, old: int, new: int) -> None:
        if old == new:
            return
        other = self._pads.pop(new, None)
        pad = self._pads.pop(old)
        pad.note = new
        self._pads[new] = pad
        if other is not None:  # swap: the pad that had the note takes the old one
            other.note = old
            self._pads[old] = other
        for entry in self.config["pads"]:
            entry["note"] = {old: new, new: old}.get(entry["note"], entry["note"])

    def to_config(self) -> dict[str, Any]:
        """The configuration now in effect (learned bindings included), for the settings file."""
        with self._lock:
            return check_config(self.config)

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            task, arg = self._tasks.get()
            if task == "stop":
                return
            try:
                getattr(self, f"_do_{task}")(arg)
            except Exception:  # a bug in one task must not stop the pads
                log.exception("pad rack task %s failed", task)

    def _do_models(self, _: Any) -> None:
        """The model changed (or first start): which pads it can render; drop every stock."""
        model = self.engine.model
        categories = model.categories if model else ()
        with self._lock:
            for pad in self._pads.values():
                pad.stock.clear()
                pad.current, pad.error, pad.model_category = None, None, None
                try:
                    pad.model_category = pad_category(pad.note, categories, {pad.note: pad.category or ""})
                except PadError as exc:
                    pad.error = str(exc)
        self._event("models", model=model.name if model else None)
        self._do_fill(None)

    def _do_fill(self, _: Any) -> None:
        """Submit stock requests for the emptiest pads, a few at a time."""
        if self.engine.model is None:
            return
        while True:
            with self._lock:
                if self._in_flight >= MAX_IN_FLIGHT:
                    return
                wanting = [p for p in self._pads.values()
                           if p.error is None and len(p.stock) + p.pending < self.config["stock"]]
                if not wanting:
                    return
                pad = min(wanting, key=lambda p: (p.current is not None, len(p.stock) + p.pending, p.note))
                pad.pending += 1
                self._in_flight += 1
            if not self._submit(GenerateRequest(pad.model_category, seed=pad.locked_seed, origin=ORIGIN), pad,
                                "stock"):
                return

    def _submit(self, request: Any, pad: Pad, use: str, velocity: int = 100) -> bool:
        try:
            self.engine.submit(request, lambda e: self._tasks.put(("job", (e, pad, use, velocity)))
                               if e.kind in ("done", "error") else None)
            return True
        except BusyError:
            threading.Timer(RETRY_S, self._tasks.put, args=(("fill", None),)).start()
        except DDError as exc:
            self._event("error", note=pad.note, message=str(exc))
            if use == "stock":
                pad.error = str(exc)
        if use == "stock":
            with self._lock:
                pad.pending -= 1
                self._in_flight -= 1
        return False

    def _do_job(self, arg: tuple[JobEvent, Pad, str, int]) -> None:
        event, pad, use, velocity = arg
        if use == "stock":
            with self._lock:
                pad.pending = max(0, pad.pending - 1)
                self._in_flight = max(0, self._in_flight - 1)
        if event.kind == "error" or event.result is None or not event.result.paths:
            if event.error is not None and getattr(event.error, "code", "") != "cancelled":
                self._event("error", note=pad.note, message=str(event.error))
            self._do_fill(None)
            return
        path, seed = event.result.paths[0], event.result.seeds[0] if event.result.seeds else None
        try:
            sample = self._load(path, seed)
        except DDError as exc:
            self._event("error", note=pad.note, message=str(exc))
            return
        with self._lock:
            if use == "stock":
                pad.stock.append(sample)
            else:
                pad.current = sample
        self._event("loaded", note=pad.note, path=str(path), seed=seed, use=use)
        if use == "play":
            self._play(pad, sample, velocity)
        self._do_fill(None)

    def _load(self, path: Path, seed: int | None) -> PadSample:
        audio = load_audio(path, self._rate, self._channels)  # soxr, here and never in the callback
        return PadSample(np.ascontiguousarray(audio.T, dtype=np.float32), Path(path), seed)

    def _do_reload(self, _: Any) -> None:
        """The output's rate or channels changed: read every held sample again."""
        with self._lock:
            pads = list(self._pads.values())
        for pad in pads:
            with self._lock:
                current, stock = pad.current, list(pad.stock)
            try:
                fresh_current = self._load(current.path, current.seed) if current else None
                fresh_stock = [self._load(s.path, s.seed) for s in stock]
            except DDError as exc:
                log.warning("pad %d: %s", pad.note, exc)
                fresh_current, fresh_stock = None, []
            with self._lock:
                pad.current, pad.stock = fresh_current, deque(fresh_stock)

    # ------------------------------------------------------------------ modifiers, knobs, kits

    def _do_regenerate(self, arg: tuple[Pad, int]) -> None:
        """A new sample for the pad, kept as its current one: the next stocked one, or a fresh render."""
        pad, velocity = arg
        with self._lock:
            if pad.current is None and pad.stock:
                pad.stock.popleft()  # the pad stood for that one (see shown): regenerate replaces it
            sample = pad.current = pad.stock.popleft() if pad.stock else None
        if sample is not None:
            self._play(pad, sample, velocity)
            self._event("current", note=pad.note, path=str(sample.path), seed=sample.seed)
            self._do_fill(None)
        elif pad.error is None:
            self._submit(GenerateRequest(pad.model_category, fresh=True, origin=ORIGIN), pad, "play", velocity)

    def _do_variation(self, arg: tuple[Pad, int]) -> None:
        pad, velocity = arg
        if pad.current is None:
            self._do_regenerate(arg)
            return
        self._submit(VariationRequest(str(pad.current.path), category=pad.model_category, origin=ORIGIN),
                     pad, "play", velocity)

    def _do_lock_seed(self, arg: tuple[Pad, int]) -> None:
        """Toggle: lock the pad to its current sample's seed (hits replay it; knobs re-render it)."""
        pad, velocity = arg
        with self._lock:
            if pad.locked_seed is not None or pad.current is None:
                pad.locked_seed = None
            else:
                pad.locked_seed = pad.current.seed
            pad.stock.clear()
        self._event("locked", note=pad.note, seed=pad.locked_seed)
        if pad.current is not None:
            self._play(pad, pad.current, velocity)
        self._do_fill(None)

    def _do_params(self, _: Any) -> None:
        with self._lock:
            values, self._pending_params = self._pending_params, {}
        for name, value in values.items():
            try:
                now = self.engine.set_param(name, value)
            except DDError as exc:
                self._event("error", message=str(exc))
                continue
            self._event("param", param=name, value=now)
        if {"steps", "seconds", "guidance"} & set(values):  # stocked sounds were made with the old settings
            with self._lock:
                locked = [p for p in self._pads.values() if p.locked_seed is not None]
                for pad in self._pads.values():
                    pad.stock.clear()
            for pad in locked:
                self._submit(GenerateRequest(pad.model_category, seed=pad.locked_seed, fresh=True, origin=ORIGIN),
                             pad, "current")
            self._do_fill(None)

    def _do_kit(self, program: int) -> None:
        kits = self.config["kits"]
        if not 0 <= program < len(kits):
            names = ", ".join(f"{i}={k.get('name', i)}" for i, k in enumerate(kits)) or "none configured"
            self._event("error", message=f"program {program} selects no kit; kits: {names}")
            return
        kit = kits[program]
        with self._lock:
            for note, category in kit.get("pads", {}).items():
                pad = self._pads.get(int(note))
                if pad is not None:
                    pad.category = category
        self._event("kit", program=program, name=kit.get("name", str(program)))
        if kit.get("model"):
            from companion.engine.requests import LoadModelRequest

            try:
                self.engine.submit(LoadModelRequest(kit["model"], origin=ORIGIN))
            except DDError as exc:
                self._event("error", message=str(exc))
            return  # the model's "done" event resets the pads
        self._do_models(None)

    def _engine_event(self, event: JobEvent) -> None:
        """Engine threads: a model switch changes what every pad can render."""
        if event.kind == "done" and event.result is not None and event.result.kind == "load":
            self._tasks.put(("models", None))

    def _build_pads(self, entries: list[dict[str, Any]]) -> None:
        self._pads = {e["note"]: Pad(e["note"], e["category"], e["choke"], tuple(e["cuts"])) for e in entries}

    def _event(self, kind: str, **info: Any) -> None:
        if kind == "error":
            log.warning("pads: %s", info.get("message"))
        for listener in (self._on_event, *self._listeners):
            try:
                listener(kind, info)
            except Exception:
                log.exception("pad event listener failed")

    def wait_ready(self, notes: list[int] | None = None, timeout: float = 30.0, stock: int = 1) -> bool:
        """Block until the pads ``notes`` (default: every pad that can render) hold ``stock`` samples."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pads = [self._pads[n] for n in notes] if notes else [p for p in self._pads.values() if not p.error]
                if all(len(p.stock) >= stock for p in pads):
                    return True
            time.sleep(0.02)
        return False

"""The OSC adapter: validated :class:`~osc_protocol.codec.Command` s become engine requests, and the
engine's job events become replies (``/dd/queued``, ``/dd/progress``, ``/dd/done``, ``/dd/error``).

It runs in the OSC server's thread and only submits: anything slow happens in the engine. Requests
refused before they become a job raise :class:`~osc_protocol.codec.RequestError`, which the server
answers with ``/dd/error -1 <code> <message>``; a job's own end is answered with its number. Jobs
that did not come over OSC (MIDI pads, the GUI) are broadcast to every subscribed reply address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from companion.config.pads import DEFAULT_PAD_MAP, pad_category
from companion.engine.engine import Engine
from companion.engine.jobs import JobEvent, Listener
from companion.engine.pool import Pool
from companion.engine.requests import GenerateRequest, LoadModelRequest, MorphRequest, VariationRequest
from models.errors import DDError
from models.registry import DEFAULT_MODEL, DEFAULT_ONNX, installed_models
from osc_protocol.codec import Command, RequestError
from osc_protocol.server import OscServer, Replier
from osc_protocol.table import ERRORS

log = logging.getLogger("dd.osc")

ORIGIN = "osc"
# error codes of the project's exceptions that the protocol names differently
_WIRE_CODES = {
    "bad_length": "out_of_range",
    "unsafe_model": "bad_model",
    "bad_output_setting": "bad_config",
    "bad_wav": "output_error",
    "error": "internal",
}


def wire_code(error: BaseException) -> str:
    """The protocol's error code for an exception (``internal`` when it has none the table knows)."""
    code = getattr(error, "code", "internal")
    code = _WIRE_CODES.get(code, code)
    return code if code in ERRORS else "internal"


def model_names() -> list[str]:
    """Names ``/dd/model/load`` accepts: ``default`` (when shipped), then the user's model files."""
    names = []
    for path in installed_models():
        names.append("default" if path in (DEFAULT_MODEL, DEFAULT_ONNX) else path.stem if path.is_file() else path.name)
    return list(dict.fromkeys(names))


class OscBridge:
    """The OSC server's handler. ``load_options`` (backend, device, precision) apply to model loads."""

    def __init__(self, engine: Engine, pool: Pool | None = None, *, pads: Mapping[int, str] = DEFAULT_PAD_MAP,
                 load_options: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self.pool = pool
        self.pads = dict(pads)
        self.load_options = dict(load_options or {})
        self.server: OscServer | None = None
        self.rack: Any = None  # companion.live.padrack.PadRack when serve runs with --midi/--audio/--live
        self._handlers: dict[str, Callable[[Mapping[str, Any], Replier], None]] = {
            "status": self._status, "models": self._models, "load_model": self._load_model,
            "categories": self._categories, "generate": self._generate, "variation": self._variation,
            "morph": self._morph, "pad_trigger": self._pad_trigger, "pad_regenerate": self._pad_regenerate,
            "set": self._set, "get": self._get, "cancel": self._cancel,
        }

    def attach(self, server: OscServer) -> None:
        """Serve ``server``'s requests and broadcast non-OSC jobs to its subscribers."""
        self.server = server
        server.handler = self
        self.engine.add_listener(self._broadcast)

    def __call__(self, command: Command, replier: Replier) -> None:
        log.info("OSC %s from %s:%d", " ".join([command.address, *(f"{k}={v!r}" for k, v in command.args.items())]),
                 *command.source)
        handler = self._handlers.get(command.name)
        if handler is None:
            raise RequestError("unknown_address", f"{command.address} is not served by the engine")
        try:
            handler(command.args, replier)
        except DDError as exc:
            raise RequestError(wire_code(exc), str(exc)) from None

    # ------------------------------------------------------------------ replies for jobs

    @staticmethod
    def replies(replier: Replier) -> Listener:
        """A job listener that answers the request's sender (or its subscriptions)."""
        def on_event(event: JobEvent) -> None:
            for address, *args in event_messages(event):
                replier.send(address, *args)
        return on_event

    def _broadcast(self, event: JobEvent) -> None:
        if self.server is None or event.job.origin in (ORIGIN, "pool") or event.job.background:
            return
        for address, *args in event_messages(event):
            self.server.broadcast(address, *args)

    # ------------------------------------------------------------------ requests

    def _status(self, args: Mapping[str, Any], replier: Replier) -> None:
        status = self.engine.status()
        replier.send("/dd/status", status.state, status.model, status.runtime, status.queued)

    def _models(self, args: Mapping[str, Any], replier: Replier) -> None:
        replier.send("/dd/models", *model_names())

    def _categories(self, args: Mapping[str, Any], replier: Replier) -> None:
        model = self.engine.model
        replier.send("/dd/categories", *(model.categories if model else ()))

    def _load_model(self, args: Mapping[str, Any], replier: Replier) -> None:
        request = LoadModelRequest(args["model"], origin=ORIGIN, **self.load_options)
        self.engine.submit(request, self.replies(replier))

    def _generate(self, args: Mapping[str, Any], replier: Replier) -> None:
        request = GenerateRequest(args["category"], args["count"], _seed(args["seed"]), origin=ORIGIN)
        self.engine.submit(request, self.replies(replier))

    def _variation(self, args: Mapping[str, Any], replier: Replier) -> None:
        request = VariationRequest(args["path"], args["strength"], args["count"], _seed(args["seed"]), origin=ORIGIN)
        self.engine.submit(request, self.replies(replier))

    def _morph(self, args: Mapping[str, Any], replier: Replier) -> None:
        request = MorphRequest(args["path_a"], args["path_b"], args["frames"], origin=ORIGIN)
        self.engine.submit(request, self.replies(replier))

    def _pad_trigger(self, args: Mapping[str, Any], replier: Replier) -> None:
        category = self._pad(args["pad"])
        if self.rack is not None:  # audition the pad through the live rig, as a MIDI hit would
            self.rack.hit(args["pad"], args.get("velocity", 127))
        self.engine.submit(GenerateRequest(category, origin=ORIGIN), self.replies(replier))

    def _pad_regenerate(self, args: Mapping[str, Any], replier: Replier) -> None:
        category = self._pad(args["pad"])
        if self.pool is not None:
            dropped = self.pool.discard(category)
            log.info("pad %d: %d pre-rendered sample(s) of %s thrown away", args["pad"], dropped, category)
        self.engine.submit(GenerateRequest(category, fresh=True, origin=ORIGIN), self.replies(replier))

    def _pad(self, pad: int) -> str | None:
        model = self.engine.model
        return pad_category(pad, model.categories if model else (), self.pads)

    def _set(self, args: Mapping[str, Any], replier: Replier) -> None:
        value = self.engine.set_param(args["param"], args["value"])
        replier.send("/dd/param", args["param"], value)

    def _get(self, args: Mapping[str, Any], replier: Replier) -> None:
        replier.send("/dd/param", args["param"], self.engine.get_param(args["param"]))

    def _cancel(self, args: Mapping[str, Any], replier: Replier) -> None:
        job = args["job"]
        if job == -1:
            count = self.engine.cancel_all()
            log.info("cancelled %d job(s)", count)
        else:
            self.engine.cancel(job)
        replier.send("/dd/cancelled", job)


def _seed(seed: int | None) -> int | None:
    return None if seed is None or seed == -1 else seed


def event_messages(event: JobEvent) -> list[tuple[Any, ...]]:
    """The OSC replies (address, args…) that report one job event."""
    job = event.job.id
    if event.kind == "queued":
        return [("/dd/queued", job)]
    if event.kind == "progress":
        return [("/dd/progress", job, event.fraction)]
    if event.kind == "done" and event.result is not None:
        if event.result.kind == "load":
            return [("/dd/loaded", job, event.result.model)]
        return [("/dd/done", job, *(str(p) for p in event.result.paths))]
    if event.kind == "error" and event.error is not None:
        return [("/dd/error", job, wire_code(event.error), str(event.error))]
    return []

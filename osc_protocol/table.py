"""The OSC address space as data: requests, their arguments, the replies, the settings, the error codes.

The codec validates against these tables, the server dispatches by them, the OSCQuery namespace
(``osc_protocol.oscquery``) and ``docs/OSC.md`` are generated from them (``python -m osc_protocol.docs``),
so a change here is a change of protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
INT32_MAX = 2**31 - 1
MAX_SUBSCRIPTIONS = 16
MAX_GUIDANCE = 20.0  # models.config.MAX_GUIDANCE (this package imports nothing of the model's; a test checks)

# Argument types: the OSC type tags "i" (int32), "f" (float32) and "s" (string), plus
#   "param": a string naming a setting of PARAMS (unknown names get the code unknown_param);
#   "value": a value checked against the setting named by the preceding "param" argument;
#   "any":   an int, float or string (replies only).
TYPE_NAMES = {
    "i": "integer",
    "f": "number",
    "s": "string",
    "param": "setting name",
    "value": "setting value",
    "any": "int, float or string",
}


@dataclass(frozen=True)
class Arg:
    """One argument of a request or reply, or one setting of PARAMS.

    ``default`` is what the command carries when an optional argument is left out; ``None`` means
    "the engine's current setting", described for people by ``default_text``.
    """

    name: str
    type: str
    meaning: str
    optional: bool = False
    default: int | float | str | None = None
    default_text: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    repeated: bool = False  # the last argument of a reply may repeat (optional: zero or more)
    choices_from: str = ""  # "categories": the allowed values are the loaded model's categories

    @property
    def osc_tag(self) -> str:
        """The OSC type tag the argument is sent with, as the OSCQuery namespace states it ("param" is a
        string; a setting's "value" is stated as "f": ints and integral floats pass for it, and the one
        string setting, ``sampler``, takes "s")."""
        return {"param": "s", "value": "f", "any": "f"}.get(self.type, self.type)

    def __post_init__(self) -> None:
        if self.type not in TYPE_NAMES:
            raise ValueError(f"argument {self.name}: type must be one of {', '.join(TYPE_NAMES)}, got {self.type!r}")

    @property
    def tag(self) -> str:
        """The argument as written in usage lines, e.g. ``i:count`` or ``<value>``."""
        if self.type == "value":
            return "<value>"
        if self.type == "param":
            return f"s:{self.name}"
        return f"{self.type if self.type != 'any' else '*'}:{self.name}" + ("…" if self.repeated else "")

    @property
    def range_text(self) -> str:
        """The allowed values in words, e.g. ``1..64`` or ``one of: a, b``; empty when anything goes."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.choices_from == "categories":
            return "a category of the loaded model"
        if self.low is not None and self.high is not None:
            return f"{_number(self.low)}..{_number(self.high)}"
        if self.low is not None:
            return f">= {_number(self.low)}"
        if self.high is not None:
            return f"<= {_number(self.high)}"
        return ""


@dataclass(frozen=True)
class Request:
    """One address the companion listens on."""

    address: str
    name: str  # the command name the application dispatches on
    args: tuple[Arg, ...]
    meaning: str
    replies: tuple[str, ...]  # the final replies; /dd/error can always end a request
    interim: tuple[str, ...] = ()  # replies that may come before the final one
    example: tuple[int | float | str, ...] = ()
    builtin: bool = False  # answered by the server itself, never handed to the application

    @property
    def usage(self) -> str:
        """The address with its arguments, optional ones in brackets."""
        parts = [self.address] + [f"[{a.tag}]" if a.optional else a.tag for a in self.args]
        return " ".join(parts)


@dataclass(frozen=True)
class Reply:
    """One address the companion sends to its clients."""

    address: str
    args: tuple[Arg, ...]
    meaning: str

    @property
    def usage(self) -> str:
        """The address with its arguments, optional or repeated ones in brackets."""
        parts = [self.address] + [f"[{a.tag}]" if a.optional else a.tag for a in self.args]
        return " ".join(parts)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


JOB = Arg("job", "i", "job number, counting up from 0; -1 when the request never became a job", low=-1, high=INT32_MAX)
SEED = Arg(
    "seed", "i", "seed of the first item (item k uses seed+k); -1 or absent = random",
    optional=True, default=-1, low=-1, high=INT32_MAX,
)
COUNT = Arg("count", "i", "how many samples to render", optional=True, default=1, low=1, high=64)

_REQUESTS = (
    Request(
        "/dd/ping", "ping",
        (Arg("token", "i", "any number, echoed in the reply", optional=True, low=-(2**31), high=INT32_MAX),),
        "Check that the companion is listening. Answered by the server itself, even while the engine is busy.",
        replies=("/dd/pong",), builtin=True, example=(),
    ),
    Request(
        "/dd/status", "status", (),
        "Ask what the engine is doing and which model is loaded.",
        replies=("/dd/status",),
    ),
    Request(
        "/dd/models", "models", (),
        "List the models the companion can load (embedded, downloaded and user checkpoints).",
        replies=("/dd/models",),
    ),
    Request(
        "/dd/model/load", "load_model",
        (Arg("model", "s", "a name from /dd/models or the path of a checkpoint file"),),
        "Load a model in the background; the previous one keeps serving until the new one is ready.",
        replies=("/dd/loaded",), interim=("/dd/queued",), example=("default",),
    ),
    Request(
        "/dd/categories", "categories", (),
        "List the sound categories of the loaded model (kick, snare, …).",
        replies=("/dd/categories",),
    ),
    Request(
        "/dd/generate", "generate",
        (Arg("category", "s", "the category to render, from /dd/categories", choices_from="categories"), COUNT, SEED),
        "Render new samples of a category into the output folder.",
        replies=("/dd/done",), interim=("/dd/queued", "/dd/progress"), example=("kick", 4, 1234),
    ),
    Request(
        "/dd/variation", "variation",
        (
            Arg("path", "s", "the sound to vary (a WAV or FLAC file the companion can read)"),
            Arg("strength", "f", "how far to move from the source: 0 keeps it, 1 ignores it", optional=True,
                default_text="the `strength` setting", low=0.0, high=1.0),
            COUNT,
            SEED,
        ),
        "Render variations of an existing sound (it is noised to `strength`, then denoised). "
        "`path` may also name an earlier result as `job:<job>` or `job:<job>:<item>`. Models with "
        "categories use the category recorded in the file, else one named in its file or folder name.",
        replies=("/dd/done",), interim=("/dd/queued", "/dd/progress"), example=("/samples/kick_001.wav", 0.3, 2),
    ),
    Request(
        "/dd/morph", "morph",
        (
            Arg("path_a", "s", "the sound to start from"),
            Arg("path_b", "s", "the sound to end on"),
            Arg("frames", "i", "how many sounds to render, both ends included", optional=True, default=8,
                low=2, high=64),
        ),
        "Render a series of sounds that morph from one sound into another.",
        replies=("/dd/done",), interim=("/dd/queued", "/dd/progress"),
        example=("/samples/kick_001.wav", "/samples/snare_004.wav", 8),
    ),
    Request(
        "/dd/pad/trigger", "pad_trigger",
        (
            Arg("pad", "i", "pad number as in the pad map (for MIDI pads, the note number)", low=0, high=127),
            Arg("velocity", "i", "how hard the pad was hit", optional=True, default=127, low=1, high=127),
        ),
        "Hit a pad: play and deliver its next sample (from the pre-render pool when one is ready).",
        replies=("/dd/done",), interim=("/dd/queued", "/dd/progress"), example=(36, 100),
    ),
    Request(
        "/dd/pad/regenerate", "pad_regenerate",
        (Arg("pad", "i", "pad number as in the pad map", low=0, high=127),),
        "Throw away the pad's pre-rendered samples and render fresh ones.",
        replies=("/dd/done",), interim=("/dd/queued", "/dd/progress"), example=(36,),
    ),
    Request(
        "/dd/set", "set",
        (Arg("param", "param", "the setting to change, see Settings"),
         Arg("value", "value", "its new value, typed and ranged as in Settings")),
        "Change a setting of the engine. The reply carries the value now in effect.",
        replies=("/dd/param",), example=("steps", 50),
    ),
    Request(
        "/dd/get", "get",
        (Arg("param", "param", "the setting to read, see Settings"),),
        "Read a setting of the engine.",
        replies=("/dd/param",), example=("sampler",),
    ),
    Request(
        "/dd/cancel", "cancel",
        (Arg("job", "i", "the job to cancel; -1 = every queued and running job", low=-1, high=INT32_MAX),),
        "Cancel a job. The canceller gets `/dd/cancelled`; the job itself ends with `/dd/error <job> cancelled …`.",
        replies=("/dd/cancelled",), example=(3,),
    ),
    Request(
        "/dd/reply/subscribe", "subscribe",
        (
            Arg("host", "s", "the IP address to send to; another host than the sender's must be in the "
                "allow-list (or be a loopback address when there is none)", optional=True,
                default_text="the sender's address"),
            Arg("port", "i", "the UDP port to send to", low=1, high=65535),
        ),
        "Send the replies to requests from this host, and all broadcasts (progress and results of pad hits, "
        "MIDI and GUI requests), to host:port. The acknowledgement goes to the new address. "
        "Answered by the server itself.",
        replies=("/dd/subscribed",), builtin=True, example=(9001,),
    ),
    Request(
        "/dd/reply/unsubscribe", "unsubscribe",
        (Arg("port", "i", "remove only the subscription to this port", optional=True,
             default_text="remove every subscription of the sender's host", low=1, high=65535),),
        "Stop sending to the addresses this host subscribed; replies go back to the sender. "
        "Answered by the server itself.",
        replies=("/dd/unsubscribed",), builtin=True, example=(),
    ),
)

_REPLIES = (
    Reply("/dd/pong", (Arg("token", "i", "the token of the ping, when it had one", optional=True),),
          "Answer to `/dd/ping`."),
    Reply("/dd/queued", (JOB,), "The request became a job; its progress and result carry this number."),
    Reply("/dd/progress", (JOB, Arg("fraction", "f", "share of the job done", low=0.0, high=1.0)),
          "Progress of a running job, sent at most every few tenths of a second."),
    Reply("/dd/done", (JOB, Arg("path", "s", "absolute path of a finished WAV file", repeated=True)),
          "A job finished; one path per rendered sample."),
    Reply("/dd/error", (JOB, Arg("code", "s", "an error code, see Error codes"),
                        Arg("message", "s", "what went wrong, naming the bad value and what is allowed")),
          "A request was refused or a job failed or was cancelled."),
    Reply("/dd/status", (
        Arg("state", "s", "what the engine is doing", choices=("idle", "busy", "loading")),
        Arg("model", "s", "name of the loaded model, empty while none is"),
        Arg("backend", "s", "where the model runs, e.g. torch-cuda, torch-cpu, onnx-cpu"),
        Arg("queued", "i", "jobs waiting or running"),
    ), "Answer to `/dd/status`."),
    Reply("/dd/models", (Arg("name", "s", "a loadable model", optional=True, repeated=True),),
          "Answer to `/dd/models`: zero or more names."),
    Reply("/dd/categories", (Arg("name", "s", "a category", optional=True, repeated=True),),
          "Answer to `/dd/categories`: zero or more names."),
    Reply("/dd/cancelled", (Arg("job", "i", "the cancelled job, or -1 for all", low=-1, high=INT32_MAX),),
          "Answer to `/dd/cancel`."),
    Reply("/dd/loaded", (JOB, Arg("model", "s", "name of the model now loaded")), "A model load finished."),
    Reply("/dd/param", (Arg("name", "s", "the setting"), Arg("value", "any", "its value now")),
          "Answer to `/dd/set` and `/dd/get`."),
    Reply("/dd/subscribed", (Arg("host", "s", "the subscribed host"), Arg("port", "i", "the subscribed port")),
          "Answer to `/dd/reply/subscribe`, sent to the new address."),
    Reply("/dd/unsubscribed", (Arg("count", "i", "how many subscriptions were removed"),),
          "Answer to `/dd/reply/unsubscribe`."),
)

_PARAMS = (
    Arg("steps", "i", "diffusion steps per sample (more: slower, cleaner)", low=1, high=1000),
    Arg("sampler", "s", "sampler name from the engine's sampler table (e.g. v-ddim, v-iplms); "
        "an unknown name gets `bad_config`"),
    Arg("guidance", "f", "classifier-free guidance scale of new samples and variations (morphs stay unguided): "
        "1 = none, higher = more typical of the category, at up to twice the compute. Until set, the loaded "
        "model's recommendation; an unconditional model always renders unguided (above 1 gets `bad_config`). "
        "A change empties the pre-render pool", low=1.0, high=MAX_GUIDANCE),
    Arg("tail_gate", "f", "tail gate of new samples and variations: whatever lies more than this many dB under a "
        "sound's loudest 10 ms is pushed further down, taking a model's hiss and rumble floor out of the tails; "
        "0 = off, else -120..-10 (between gets `out_of_range`). Until set, the loaded model's recommendation. "
        "A change empties the pre-render pool", low=-120.0, high=0.0),
    Arg("band_limit", "i", "1 filters new samples, variations and morphs to their category's band: the loaded "
        "model's low and high cut, where its training sounds have almost nothing, so what they take is the network's "
        "rumble and hiss; 0 = off. Until set, on. A change empties the pre-render pool", low=0, high=1),
    Arg("strength", "f", "default variation strength: 0 keeps the source, 1 ignores it", low=0.0, high=1.0),
    Arg("seconds", "f", "length of new samples in seconds (the engine rounds it to what the model can make)",
        low=0.05, high=60.0),
    Arg("pool_size", "i", "samples kept pre-rendered per pad for instant hits; 0 turns the pool off",
        low=0, high=64),
    Arg("batch_size", "i", "most samples rendered together in one batch", low=1, high=64),
    Arg("seed", "i", "seed used when a request names none; -1 = random every time", low=-1, high=INT32_MAX),
    Arg("audition", "i", "1 plays finished samples on the audio output, 0 only writes them", low=0, high=1),
)

_ERRORS = (
    ("malformed", "the datagram is not a valid OSC message or bundle"),
    ("unknown_address", "no such address (address patterns with wildcards are not supported)"),
    ("missing_argument", "a required argument is missing"),
    ("too_many_arguments", "more arguments than the address takes"),
    ("bad_type", "an argument has the wrong type (ints pass for floats, integral floats for ints)"),
    ("out_of_range", "a number is outside its range, or not finite"),
    ("bad_value", "a string is empty or not one of the allowed values"),
    ("unknown_param", "`/dd/set` or `/dd/get` named a setting that does not exist"),
    ("not_allowed", "the server refuses this (a reply host outside the allow-list, too many subscriptions)"),
    ("unavailable", "no engine is attached to the server yet"),
    ("internal", "the companion failed while taking the request; the log has the details"),
    ("cancelled", "sent by the engine: the job was cancelled"),
    ("unknown_job", "sent by the engine: `/dd/cancel` named no queued or running job"),
    ("busy", "sent by the engine: its queue is full (or a model is already loading); try again later"),
    ("disk_full", "sent by the engine: the output folder's disk is full; nothing partial was left behind"),
    ("folder_unwritable", "sent by the engine: the output folder is missing, read-only or not permitted"),
    ("output_error", "sent by the engine: a sample could not be written for another reason (see the message)"),
    ("bad_audio", "sent by the engine: a source file is not audio the companion can read"),
    ("not_found", "sent by the engine: a model, category, pad or file does not exist"),
    ("bad_model", "sent by the engine: a model file is unreadable or does not fit"),
    ("bad_config", "sent by the engine: a setting or request the loaded model cannot do"),
)

# Values a controller may show, read over OSCQuery (HTTP) only: ``STATE_PREFIX`` + "/" + name; the pool
# fill is one value per category of the loaded model under ``POOL_PREFIX``, the settings' values (as
# /dd/get reads them) under ``SETTINGS_PREFIX``, named and ranged as in PARAMS.
STATE_PREFIX = "/dd/state"
POOL_PREFIX = STATE_PREFIX + "/pool"
SETTINGS_PREFIX = STATE_PREFIX + "/settings"
_STATE = (
    Arg("engine", "s", "what the engine is doing", choices=("idle", "busy", "loading")),
    Arg("model", "s", "name of the loaded model, empty while none is"),
    Arg("backend", "s", "where the model runs, e.g. torch-cuda, torch-cpu, onnx-cpu"),
    Arg("queued", "i", "jobs waiting or running", low=0),
)
POOL_FILL = Arg("category", "i", "pre-rendered samples of the category ready for instant hits", low=0, high=64)

REQUESTS: dict[str, Request] = {r.address: r for r in _REQUESTS}
STATE: dict[str, Arg] = {a.name: a for a in _STATE}
REPLIES: dict[str, Reply] = {r.address: r for r in _REPLIES}
PARAMS: dict[str, Arg] = {p.name: p for p in _PARAMS}
ERRORS: dict[str, str] = dict(_ERRORS)

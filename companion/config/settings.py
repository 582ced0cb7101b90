"""The companion's settings: one table of checked keys, a config file, command-line overrides.

The file is ``user_config_dir("dd-companion")/settings.toml`` unless ``--config`` names another;
``.toml`` files are read with :mod:`tomllib`, ``.json`` files with :mod:`json`. Keys left out keep
their defaults; unknown keys and bad values are errors naming the key and what is allowed, never
silently ignored. Optional keys (``reply_port``, ``model``, ``rate``, ``steps``, ``sampler``, ``guidance``,
``seconds``, ``midi_port``, ``audio_device``, ``pads``) are "unset" when absent; TOML has no null, so they are
simply not written. Every key is a plain value except ``pads``, the live pad rack's configuration
(:mod:`companion.config.padmap`), which the TOML file holds as a ``[pads]`` section.

The keys of :class:`Params` (:data:`PARAM_KEYS`) are also the engine's live parameters (``/dd/set``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir

from companion.config.padmap import PadMapError, check_config
from models.backend import BACKENDS
from models.config import MAX_GUIDANCE
from models.errors import DDError
from models.finish import TAIL_GATE_RANGE
from models.generate import MAX_SEED
from models.samplers import DEFAULT_SAMPLER, SAMPLERS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: JSON settings files still work
    tomllib = None  # type: ignore[assignment]

PARAM_KEYS = ("steps", "sampler", "guidance", "tail_gate", "band_limit", "strength", "seconds", "pool_size", "batch_size", "seed",
              "audition")


class SettingsError(DDError, ValueError):
    """A setting is unknown, of the wrong type or outside what is allowed; ``code`` says which."""

    def __init__(self, message: str, code: str = "bad_config") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Spec:
    """What one key accepts: a type, a range (ints and floats) or choices (strings)."""

    type: type
    meaning: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # may be None ("unset")
    low_open: bool = False  # low itself is excluded
    nonempty: bool = False  # '' is refused (a device name prefix '' would match any device)


SPECS: dict[str, Spec] = {
    "folder": Spec(str, "output folder ('' = <Music>/dd-companion, else <Documents>/dd-companion)"),
    "osc_host": Spec(str, "address to listen on for OSC (127.0.0.1; another one needs 'allow')"),
    "osc_port": Spec(int, "UDP port to listen on (0 = any free port)", 0, 65535),
    "reply_port": Spec(int, "send replies to this port on the sender's host (unset = the sender's port)",
                       1, 65535, optional=True),
    "allow": Spec(list, "client addresses or networks allowed when listening on the network"),
    "oscquery_port": Spec(int, "TCP port of the OSCQuery (HTTP) namespace, on the OSC host (unset = the OSC port + 1; "
                          "0 = any free port; -1 = off)", -1, 65535, optional=True),
    "mdns": Spec(int, "1 advertises OSC and OSCQuery over mDNS/DNS-SD (_osc._udp, _oscjson._tcp), 0 does not "
                 "(unset = only when listening beyond loopback)", 0, 1, optional=True),
    "model": Spec(str, "model name or path (unset = the shipped default model)", optional=True),
    "backend": Spec(str, "runtime", choices=BACKENDS),
    "device": Spec(str, "auto, cpu, cuda, cuda:N or mps"),
    "precision": Spec(str, "torch precision", choices=("auto", "fp32", "fp16", "bf16")),
    "rate": Spec(int, "output sample rate (unset = the model's)", 8000, 384000, optional=True),
    "format": Spec(str, "WAV sample format", choices=("pcm24", "float")),
    "max_per_category": Spec(int, "auto-fill: keep at most this many companion files per category (0 = all)",
                             0, 10**6),
    "pool_categories": Spec(list, "categories to keep pre-rendered ([] = every category of the model)"),
    "queue_limit": Spec(int, "most live jobs waiting or running; more are answered 'busy'", 1, 1024),
    "steps": Spec(int, "diffusion steps (unset = the model's recommendation, else the sampler's default)", 1, 1000,
                  optional=True),
    "sampler": Spec(str, f"sampler name (unset = the model's recommended one, else {DEFAULT_SAMPLER})",
                    choices=tuple(SAMPLERS), optional=True),
    "guidance": Spec(float, "classifier-free guidance scale, 1 = none (unset = the model's recommendation; "
                     "above 1 only for models with categories)", 1.0, MAX_GUIDANCE, optional=True),
    "tail_gate": Spec(float, f"tail gate threshold in dB under a sound's loudest 10 ms, 0 = off, else "
                      f"{TAIL_GATE_RANGE[0]:g}..{TAIL_GATE_RANGE[1]:g} (unset = the model's recommendation)",
                      TAIL_GATE_RANGE[0], 0.0, optional=True),
    "band_limit": Spec(int, "1 filters each new sample to its category's band (the model's low and high cut, where "
                       "its training sounds have almost nothing), 0 = off (unset = on)", 0, 1, optional=True),
    "strength": Spec(float, "default variation strength", 0.0, 1.0, low_open=True),
    "seconds": Spec(float, "length of new samples (unset = the model's window)", 0.05, 60.0, optional=True),
    "pool_size": Spec(int, "samples kept pre-rendered per category (0 = no pool)", 0, 64),
    "batch_size": Spec(int, "most samples rendered in one batch (0 = auto: 1 on CPU, 4 on GPU)", 0, 64),
    "seed": Spec(int, "seed when a request names none (-1 = random)", -1, MAX_SEED),
    "audition": Spec(int, "1 plays finished samples on the audio output", 0, 1),
    "live": Spec(int, "1 starts the live rig in serve: MIDI pads and audio output", 0, 1),
    "midi_port": Spec(str, "MIDI input, a name or its start (unset = a virtual port 'DD Companion')",
                      optional=True, nonempty=True),
    "audio_device": Spec(str, "audio output device name for pads and audition (unset = the system default)",
                         optional=True, nonempty=True),
    "pads": Spec(dict, "the pad map, a [pads] table: channel, behaviour, stock, velocity_curve, pads, "
                 "modifiers, params, kits (see docs/live.md; unset = the GM 4x4 grid on notes 36-51)",
                 optional=True),
}


@dataclass(frozen=True)
class Params:
    """The engine's live generation parameters (a subset of :class:`Settings`)."""

    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None  # None: the loaded model's recommendation
    tail_gate: float | None = None  # likewise
    band_limit: int | None = None  # None: the model's band limits (on); 0: off
    strength: float = 0.5
    seconds: float | None = None
    pool_size: int = 2
    batch_size: int = 0
    seed: int = -1
    audition: int = 0


@dataclass(frozen=True)
class Settings(Params):
    """Every setting of ``dd-companion serve`` (the engine's :class:`Params` and the rest); build changed
    copies with :meth:`updated`."""

    folder: str = ""
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    reply_port: int | None = None
    allow: tuple[str, ...] = ()
    oscquery_port: int | None = None
    mdns: int | None = None
    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    rate: int | None = None
    format: str = "pcm24"
    max_per_category: int = 0
    pool_categories: tuple[str, ...] = ()
    queue_limit: int = 16
    live: int = 0
    midi_port: str | None = None
    audio_device: str | None = None
    pads: dict[str, Any] | None = field(default=None, hash=False)  # checked by padmap.check_config

    def updated(self, values: Mapping[str, Any]) -> Settings:
        """A copy with ``values`` applied, each checked by :func:`check_setting`."""
        return replace(self, **{key: check_setting(key, value) for key, value in values.items()})

    def params(self) -> Params:
        return Params(**{key: getattr(self, key) for key in PARAM_KEYS})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def check_setting(key: str, value: Any) -> Any:
    """``value`` checked (and ints widened to floats where a float is wanted) for setting ``key``."""
    spec = SPECS.get(key)
    if spec is None:
        raise SettingsError(f"unknown setting {key!r}; settings are: {', '.join(SPECS)}", "unknown_param")
    if value is None:
        if spec.optional:
            return None
        raise SettingsError(f"{key} must be set ({spec.meaning})", "bad_value")
    if spec.type is dict:
        return _check_pads(key, value)
    if spec.type is list:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise SettingsError(f"{key} must be a list of non-empty strings, got {value!r}", "bad_type")
        return tuple(value)
    if spec.type is str:
        if not isinstance(value, str):
            raise SettingsError(f"{key} must be a string, got {value!r}", "bad_type")
        if spec.choices and value not in spec.choices:
            raise SettingsError(f"{key} must be one of {', '.join(spec.choices)}, got {value!r}", "bad_config")
        if spec.nonempty and not value.strip():
            raise SettingsError(f"{key} must be a non-empty name (leave it out for the default), got {value!r}",
                                "bad_value")
        return value
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.type is int and not (number_ok and float(value).is_integer()):
        raise SettingsError(f"{key} must be an integer, got {value!r}", "bad_type")
    if not number_ok or not math.isfinite(value):
        raise SettingsError(f"{key} must be a finite number, got {value!r}", "bad_type")
    value = spec.type(value)
    too_low = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
    if too_low or (spec.high is not None and value > spec.high):
        allowed = f"({_num(spec.low)}, {_num(spec.high)}]" if spec.low_open else f"{_num(spec.low)}..{_num(spec.high)}"
        raise SettingsError(f"{key} must be in {allowed}, got {value!r}", "out_of_range")
    if key == "tail_gate" and TAIL_GATE_RANGE[1] < value < 0.0:  # the spec's range has a gap: models/finish.py
        low, high = TAIL_GATE_RANGE
        raise SettingsError(f"tail_gate must be 0 (off) or in {low:g}..{high:g}, got {value!r}", "out_of_range")
    return value


def _check_pads(key: str, value: Any) -> dict[str, Any]:
    """The full pad rack config (defaults filled in); kit note keys become strings, as TOML and JSON keep them."""
    try:
        config = check_config(value)
    except PadMapError as exc:
        raise SettingsError(f"{key}: {exc}", "bad_config") from None
    for kit in config["kits"]:
        notes = {}
        for note, category in kit.get("pads", {}).items():
            number = int(note) if isinstance(note, int | str) and str(note).isdigit() else -1
            if not 0 <= number <= 127 or not isinstance(category, str) or not category:
                raise SettingsError(f"{key}: kit pads must map notes 0..127 to category names, "
                                    f"got {note!r} = {category!r}")
            notes[str(number)] = category
        if "pads" in kit:
            kit["pads"] = notes
    return config


def _num(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else str(x)


def settings_path() -> Path:
    """Where settings live by default: ``<user config dir>/dd-companion/settings.toml``."""
    return Path(user_config_dir("dd-companion", appauthor=False)) / "settings.toml"


def load_settings(path: str | Path | None = None, *, must_exist: bool = False) -> Settings:
    """Settings from ``path`` (default :func:`settings_path`); defaults when the file does not exist."""
    path = settings_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        if must_exist:
            raise SettingsError(f"settings file '{path}' does not exist", "not_found")
        return Settings()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file '{path}': {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif tomllib is None:
            raise SettingsError(f"reading TOML needs Python 3.11 or newer; use a .json settings file, not '{path}'")
        else:
            data = tomllib.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise SettingsError(f"settings file '{path}' is not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file '{path}' must hold a table of keys, got {type(data).__name__}")
    try:
        return Settings().updated(data)
    except SettingsError as exc:
        raise SettingsError(f"settings file '{path}': {exc}", exc.code) from None


def save_settings(settings: Settings, path: str | Path | None = None) -> Path:
    """Write ``settings`` to ``path`` (TOML, or JSON for a ``.json`` name) atomically; return the path."""
    path = settings_path() if path is None else Path(path).expanduser()
    data = {k: v for k, v in settings.to_dict().items() if v is not None}
    text = json.dumps(data, indent=2) + "\n" if path.suffix.lower() == ".json" else to_toml(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise SettingsError(f"cannot write settings file '{path}': {exc.strerror or exc}") from None
    return path


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML: plain keys one per line, then each table holding tables as a ``[section]``.

    A table of plain values is written inline (``{type = "cc", number = 102}``), a list of tables as
    a multi-line array with one inline table per line. None values are left out (TOML has no null;
    a missing key reads back as unset). ``tomllib.loads(to_toml(d))`` gives ``d`` back, less the Nones.
    """
    lines = ["# dd-companion settings; see `dd-companion serve --help` for what each key does"]
    _toml_table(lines, (), data)
    return "\n".join(lines) + "\n"


def _toml_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    where = "".join(f"{p}." for p in path)
    sections = {k: v for k, v in table.items() if isinstance(v, Mapping) and _has_table(v)}
    lines.append(f"[{'.'.join(map(_toml_key, path))}]" if path else "")
    for key, value in table.items():
        if value is None or key in sections:
            continue
        if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
            items = [f"  {_toml_value(f'{where}{key}', v)}," for v in value]
            lines.extend([f"{_toml_key(key)} = [", *items, "]"])
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(f'{where}{key}', value)}")
    for key, value in sections.items():
        lines.append("")
        _toml_table(lines, (*path, key), value)


def _has_table(table: Mapping[str, Any]) -> bool:
    return any(isinstance(v, Mapping) or (isinstance(v, list | tuple) and any(isinstance(i, Mapping) for i in v))
               for v in table.values())


def _toml_key(key: Any) -> str:
    key = str(key)
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _toml_value("key", key)


def _toml_value(key: str, value: Any) -> str:
    """One value on one line (TOML 1.0 allows no newline inside an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SettingsError(f"{key} must be finite to be saved, got {value}")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are valid TOML basic-string escapes; TOML also wants DEL escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        if any(v is None for v in value):
            raise SettingsError(f"{key}: cannot save a list holding None in TOML")
        return "[" + ", ".join(_toml_value(key, v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(f'{key}.{k}', v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise SettingsError(f"{key}: cannot save a {type(value).__name__} value in TOML")


def describe() -> list[tuple[str, Any, str]]:
    """``(key, default, meaning)`` for every setting, for help texts."""
    defaults = Settings()
    return [(f.name, getattr(defaults, f.name), SPECS[f.name].meaning) for f in fields(Settings)]

"""The pad rack's configuration as data: pads, modifiers, CC → parameter maps, kits, checked like settings.

Everything is a plain dict of strings, ints, floats and lists (JSON/TOML-friendly, the same shape
the settings file holds). The default is the 4×4 grid on notes 36–51 with the General MIDI drum
meanings of :data:`companion.config.pads.DEFAULT_PAD_MAP`; the open hat (46) is in choke group 1 and the
closed and pedal hats (42, 44) cut it. Errors name the bad key or value and what is allowed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from companion.config.pads import DEFAULT_PAD_MAP
from models.errors import DDError

BEHAVIOURS = ("new", "keep")  # a new sample on every hit | audition, then keep the sample
MODIFIERS = ("regenerate", "variation", "lock_seed")
PARAMS = ("steps", "strength", "seconds", "guidance")
BINDING_TYPES = ("note", "cc")
GRID = tuple(range(36, 52))
HAT_GROUP = 1


class PadMapError(DDError, ValueError):
    """A pad rack setting that is unknown or out of range."""

    code = "bad_config"


def default_config() -> dict[str, Any]:
    """A fresh copy of the default rack: GM 4×4 grid, hat choke, modifiers and knobs on free CCs."""
    pads = []
    for note in GRID:
        pad: dict[str, Any] = {"note": note, "category": DEFAULT_PAD_MAP[note], "choke": 0, "cuts": []}
        if note == 46:
            pad["choke"] = HAT_GROUP
        if note in (42, 44):
            pad["cuts"] = [HAT_GROUP]
        pads.append(pad)
    return {
        "channel": -1,  # omni
        "behaviour": "new",
        "stock": 2,  # ready samples each pad keeps at the output rate
        "velocity_curve": 2.0,  # gain = (velocity / 127) ** curve
        "pads": pads,
        # held while a pad is hit: CC value >= 64 or a held note (CCs 102-119 are undefined in MIDI 1.0)
        "modifiers": {"regenerate": {"type": "cc", "number": 102}, "variation": {"type": "cc", "number": 103},
                      "lock_seed": {"type": "cc", "number": 104}},
        "params": [
            {"type": "cc", "number": 105, "param": "steps", "low": 4, "high": 100},
            {"type": "cc", "number": 106, "param": "strength", "low": 0.05, "high": 1.0},
            {"type": "cc", "number": 107, "param": "seconds", "low": 0.1, "high": 2.0},
            # 1 (none) to 5: past that, sounds of a small model over-shoot (see docs/default-model.md)
            {"type": "cc", "number": 108, "param": "guidance", "low": 1.0, "high": 5.0},
        ],
        "kits": [],  # program change n selects kits[n]: {"name": str, "pads": {note: category}, "model": str}
    }


def check_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The default config with ``config``'s keys checked and applied (a deep copy)."""
    merged = default_config()
    if config is None:
        return merged
    if not isinstance(config, Mapping):
        raise PadMapError(f"the pad rack config must be a table, got {type(config).__name__}")
    unknown = set(config) - set(merged)
    if unknown:
        raise PadMapError(f"unknown pad rack key(s) {sorted(unknown)}; keys are: {', '.join(merged)}")
    merged.update(copy.deepcopy(dict(config)))
    merged["channel"] = _int(merged["channel"], "channel", -1, 15)
    if merged["behaviour"] not in BEHAVIOURS:
        raise PadMapError(f"behaviour must be one of {', '.join(BEHAVIOURS)}, got {merged['behaviour']!r}")
    merged["stock"] = _int(merged["stock"], "stock", 0, 16)
    curve = merged["velocity_curve"]
    if isinstance(curve, bool) or not isinstance(curve, int | float) or not 0.0 <= curve <= 4.0:
        raise PadMapError(f"velocity_curve must be a number in 0..4, got {curve!r}")
    merged["pads"] = [check_pad(p) for p in _list(merged["pads"], "pads")]
    notes = [p["note"] for p in merged["pads"]]
    if len(set(notes)) != len(notes):
        raise PadMapError(f"two pads share a note: {sorted(n for n in notes if notes.count(n) > 1)}")
    mods = merged["modifiers"]
    if not isinstance(mods, Mapping) or set(mods) - set(MODIFIERS):
        raise PadMapError(f"modifiers must be a table with keys among {', '.join(MODIFIERS)}, got {mods!r}")
    merged["modifiers"] = {name: check_binding(b, f"modifier {name}") for name, b in mods.items()}
    merged["params"] = [check_param_map(p) for p in _list(merged["params"], "params")]
    for kit in _list(merged["kits"], "kits"):
        if not isinstance(kit, Mapping) or not isinstance(kit.get("pads", {}), Mapping):
            raise PadMapError(f"a kit must be a table with 'pads' (note -> category), got {kit!r}")
    return merged


def check_pad(pad: Any) -> dict[str, Any]:
    if not isinstance(pad, Mapping) or "note" not in pad:
        raise PadMapError(f"a pad must be a table with a 'note', got {pad!r}")
    note = _int(pad["note"], "pad note", 0, 127)
    category = pad.get("category")
    if category is not None and (not isinstance(category, str) or not category):
        raise PadMapError(f"pad {note}: category must be a non-empty name, got {category!r}")
    cuts = [_int(g, f"pad {note} cuts", 1, 31) for g in _list(pad.get("cuts", []), f"pad {note} cuts")]
    return {"note": note, "category": category, "choke": _int(pad.get("choke", 0), f"pad {note} choke", 0, 31),
            "cuts": cuts}


def check_binding(binding: Any, what: str) -> dict[str, Any]:
    if not isinstance(binding, Mapping) or binding.get("type") not in BINDING_TYPES:
        raise PadMapError(f"{what} must be a table with type among {', '.join(BINDING_TYPES)}, got {binding!r}")
    return {"type": binding["type"], "number": _int(binding.get("number"), f"{what} number", 0, 127)}


def check_param_map(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or entry.get("param") not in PARAMS:
        raise PadMapError(f"a parameter map needs param among {', '.join(PARAMS)}, got {entry!r}")
    low, high = entry.get("low"), entry.get("high")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PadMapError(f"parameter map {entry['param']}: {name} must be a number, got {value!r}")
    return {**check_binding({"type": "cc", **entry}, f"parameter map {entry['param']}"),
            "param": entry["param"], "low": low, "high": high}


def param_value(entry: Mapping[str, Any], value: int) -> int | float:
    """A CC value 0..127 scaled into the map's low..high (steps rounded to an integer)."""
    scaled = entry["low"] + (entry["high"] - entry["low"]) * value / 127.0
    return int(round(scaled)) if entry["param"] == "steps" else round(float(scaled), 4)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PadMapError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise PadMapError(f"{what} must be a list, got {value!r}")
    return list(value)

"""A pack spec: the TOML file that says what a pack holds, checked field by field before any work.

The spec has three tables and one table per category (see docs/packs.md and examples/)::

    [pack]       name, out, seed, naming, format, rate, model, backend, threads
    [sampling]   sampler, steps, schedule, eta, guidance, guidance_interval, sigma_max, rho,
                 tail_gate_db, band_limit, seconds            (defaults for every category)
    [categories.<name>]  count, seed | seeds, velocity_layers, note, choke, cuts, and any [sampling] key

:func:`load_spec` parses it with :mod:`tomllib` and returns a :class:`PackSpec` whose sounds are fully
planned (name, seed, layer, round-robin position); every error is a :class:`SpecError` naming the file,
the line, the field and what is allowed. What depends on the model (its categories, the shortest length)
is checked by :func:`companion.pack.plan.check_against_model`, still before anything is rendered.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from models.errors import DDError
from models.generate import MAX_SEED
from models.samplers import SAMPLERS
from models.schedules import SCHEDULES

PACK_KEYS = ("name", "out", "seed", "naming", "format", "rate", "model", "backend", "threads")
SAMPLING_KEYS = ("sampler", "steps", "schedule", "eta", "guidance", "guidance_interval", "sigma_max", "rho",
                 "tail_gate_db", "band_limit", "seconds")
CATEGORY_KEYS = ("count", "seed", "seeds", "velocity_layers", "note", "choke", "cuts", *SAMPLING_KEYS)
FORMATS = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}
BACKENDS = ("auto", "torch", "onnxruntime")
PLACEHOLDERS = ("pack", "category", "index", "seed", "layer", "variation")
DEFAULT_NAMING = "{category}/{pack}_{category}_{index:03d}.wav"
MAX_SOUNDS = 100_000
MAX_COUNT = 10_000
MAX_LAYERS = 8
MAX_SECONDS = 30.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")


class SpecError(DDError, ValueError):
    """A pack spec that cannot be read or holds a value that is not allowed."""

    code = "bad_config"


@dataclass(frozen=True)
class Sound:
    """One planned sound of a pack: where it goes and everything that decides its samples."""

    name: str  # path relative to the pack folder, '/'-separated
    category: str
    index: int  # 1-based within its category
    seed: int
    layer: int  # 1-based velocity layer
    variation: int  # 1-based round-robin position within its layer
    sampling: tuple[tuple[str, Any], ...]  # the [sampling] keys that apply, spec's values (None: model's)

    def option(self, key: str) -> Any:
        return dict(self.sampling).get(key)


@dataclass(frozen=True)
class CategoryPlan:
    """A category's kit facts: its layers and round-robin length, and the note / choke when the spec gives them."""

    name: str
    count: int
    velocity_layers: int
    note: int | None
    choke: int | None
    cuts: tuple[int, ...] | None


@dataclass(frozen=True)
class PackSpec:
    """A checked spec: the pack's settings and every sound, in the order they are rendered."""

    path: Path
    name: str
    out: Path
    seed: int
    naming: str
    subtype: str
    rate: int | None
    model: str | None
    backend: str
    threads: int
    categories: tuple[CategoryPlan, ...]
    sounds: tuple[Sound, ...] = field(repr=False)
    lines: Mapping[tuple[str, str], int] = field(repr=False, default_factory=dict)

    def line_of(self, table: str, key: str | None = None) -> int | None:
        return self.lines.get((table, key or ""))


def derived_seed(base: int, category: str, index: int) -> int:
    """A sound's seed from the pack's seed, its category and its index: the same wherever it is computed,
    and unchanged when other categories or later sounds are added."""
    digest = hashlib.sha256(f"{base}/{category}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


def _locate(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> line number for every ``key = ...`` line and ``[table]`` header (key "")."""
    lines: dict[tuple[str, str], int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[\s*([^\[\]]+?)\s*\]", line)
        if header:
            table = ".".join(part.strip().strip('"').strip("'") for part in header.group(1).split("."))
            lines.setdefault((table, ""), number)
            continue
        key = re.match(r"^([A-Za-z0-9_\"'.-]+)\s*=", line)
        if key:
            parts = [p.strip().strip('"').strip("'") for p in key.group(1).split(".")]
            where = ".".join([table, *parts[:-1]]) if table else ".".join(parts[:-1])
            lines.setdefault((where, parts[-1]), number)
    return lines


class _Checker:
    """Raises :class:`SpecError` with the file, line and field of a bad value."""

    def __init__(self, path: Path, lines: Mapping[tuple[str, str], int]) -> None:
        self.path, self.lines = path, lines

    def fail(self, table: str, key: str | None, message: str) -> SpecError:
        line = self.lines.get((table, key or "")) or self.lines.get((table, ""))
        where = f"{self.path.name} line {line}" if line else self.path.name
        field_name = f"[{table}] {key}" if key else f"[{table}]"
        return SpecError(f"{where}: {field_name}: {message}")

    def keys(self, table: str, doc: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise self.fail(table, None, f"must be a table, got {doc!r}")
        for key in doc:
            if key not in allowed:
                raise self.fail(table, key, f"unknown key; allowed keys: {', '.join(allowed)}")
        return doc

    def integer(self, table: str, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(table, key, f"must be an integer in {low}..{high}, got {value!r}")
        return value

    def number(self, table: str, key: str, value: Any, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.fail(table, key, f"must be a number in {low:g}..{high:g}, got {value!r}")
        return float(value)

    def choice(self, table: str, key: str, value: Any, allowed: Any) -> str:
        if value not in allowed:
            raise self.fail(table, key, f"must be one of {', '.join(sorted(allowed))}, got {value!r}")
        return value

    def sampling(self, table: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The sampling keys of ``doc``, each checked on its own (combinations: when the model is known)."""
        out: dict[str, Any] = {}
        for key in SAMPLING_KEYS:
            if key not in doc:
                continue
            value = doc[key]
            if key == "sampler":
                value = self.choice(table, key, value, SAMPLERS)
            elif key == "schedule":
                value = self.choice(table, key, value, SCHEDULES)
            elif key == "steps":
                value = self.integer(table, key, value, 1, 1000)
            elif key == "eta":
                value = self.number(table, key, value, 0.0, 1.0)
            elif key == "guidance":
                value = self.number(table, key, value, 1.0, 20.0)
            elif key == "guidance_interval":
                ok = (isinstance(value, list) and len(value) == 2
                      and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
                      and 0.0 <= value[0] < value[1] <= 1.0)
                if not ok:
                    raise self.fail(table, key, f"must be two times [low, high] with 0 <= low < high <= 1, got {value!r}")
                value = (float(value[0]), float(value[1]))
            elif key == "sigma_max":
                value = self.number(table, key, value, 1.0, 1000.0)
            elif key == "rho":
                value = self.number(table, key, value, 1.0, 20.0)
            elif key == "tail_gate_db":
                if value != 0:
                    value = self.number(table, key, value, -120.0, -10.0)
                value = float(value)
            elif key == "band_limit":
                if not isinstance(value, bool):
                    raise self.fail(table, key, f"must be true (the model's band limits) or false, got {value!r}")
            elif key == "seconds":
                value = self.number(table, key, value, 0.01, MAX_SECONDS)
            out[key] = value
        return out


def load_spec(path: str | Path) -> PackSpec:
    """Read and check a pack spec; every sound is planned. Raises :class:`SpecError`."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"pack spec '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read pack spec '{path}': {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path.name}: not valid TOML: {exc}") from None
    return parse_spec(doc, path, _locate(text))


def parse_spec(doc: dict[str, Any], path: Path, lines: Mapping[tuple[str, str], int]) -> PackSpec:
    check = _Checker(path, lines)
    for key in doc:
        if key not in ("pack", "sampling", "categories"):
            raise check.fail(key, None, "unknown table; a spec has [pack], [sampling] and [categories.<name>]")
    if "pack" not in doc:
        raise SpecError(f"{path.name}: the [pack] table is missing; it needs at least name = \"...\"")
    pack = check.keys("pack", doc["pack"], PACK_KEYS)
    name = pack.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise check.fail("pack", "name", f"must be 1-64 letters, digits, '-' or '_' (starting with a letter or "
                                         f"digit), got {name!r}")
    out_value = pack.get("out", name)
    if not isinstance(out_value, str) or not out_value.strip():
        raise check.fail("pack", "out", f"must be a folder path (relative to the spec's folder), got {out_value!r}")
    out = Path(out_value).expanduser()
    out = (out if out.is_absolute() else path.parent / out).absolute()
    seed = check.integer("pack", "seed", pack.get("seed", 0), 0, MAX_SEED)
    naming = pack.get("naming", DEFAULT_NAMING)
    fmt = check.choice("pack", "format", pack.get("format", "pcm24"), FORMATS)
    rate = pack.get("rate")
    if rate is not None:
        rate = check.integer("pack", "rate", rate, 8000, 192000)
    model = pack.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise check.fail("pack", "model", f"must be a model path or name, got {model!r}")
    if model is not None and not Path(model).is_absolute() and (path.parent / model).exists():
        model = str((path.parent / model).absolute())
    backend = check.choice("pack", "backend", pack.get("backend", "auto"), BACKENDS)
    threads = check.integer("pack", "threads", pack.get("threads", 1), 1, 64)

    defaults = check.sampling("sampling", check.keys("sampling", doc.get("sampling", {}), SAMPLING_KEYS))
    cats = doc.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise SpecError(f"{path.name}: no categories; add a table such as [categories.kick] with count = 8")
    plans, sounds = [], []
    for category, table in cats.items():
        where = f"categories.{category}"
        if not _CATEGORY_RE.match(category):
            raise check.fail(where, None, "a category name is lower-case letters, digits and '_' (as "
                                          "'dd-companion models' lists them)")
        table = check.keys(where, table, CATEGORY_KEYS)
        if "count" not in table:
            raise check.fail(where, None, "needs count = N (how many sounds)")
        count = check.integer(where, "count", table["count"], 1, MAX_COUNT)
        layers = check.integer(where, "velocity_layers", table.get("velocity_layers", 1), 1, MAX_LAYERS)
        if count % layers:
            raise check.fail(where, "velocity_layers", f"count {count} must split evenly into {layers} layers "
                                                       f"(a multiple of {layers})")
        seeds = _seeds(check, where, table, count, seed, category)
        note = table.get("note")
        if note is not None:
            note = check.integer(where, "note", note, 0, 127)
        choke = table.get("choke")
        if choke is not None:
            choke = check.integer(where, "choke", choke, 0, 31)
        cuts = table.get("cuts")
        if cuts is not None:
            if not isinstance(cuts, list):
                raise check.fail(where, "cuts", f"must be a list of choke groups 1..31, got {cuts!r}")
            cuts = tuple(check.integer(where, "cuts", g, 1, 31) for g in cuts)
        sampling = {**defaults, **check.sampling(where, table)}
        per_layer = count // layers
        plans.append(CategoryPlan(category, count, layers, note, choke, cuts))
        for i, sound_seed in enumerate(seeds):
            sounds.append(dict(category=category, index=i + 1, seed=sound_seed, layer=i // per_layer + 1,
                               variation=i % per_layer + 1, sampling=tuple(sorted(sampling.items()))))
    if len(sounds) > MAX_SOUNDS:
        raise check.fail("categories", None, f"the pack has {len(sounds)} sounds; at most {MAX_SOUNDS}")
    planned = tuple(Sound(name=_name(check, naming, name, s), **s) for s in sounds)
    seen: dict[str, str] = {}
    for sound in planned:
        key = sound.name.lower()  # names that differ only in case collide on macOS and Windows
        if key in seen:
            raise check.fail("pack", "naming", f"gives two sounds the same file name '{sound.name}' "
                                               f"(and '{seen[key]}'); include {{index}} or {{seed}}")
        seen[key] = sound.name
    return PackSpec(path=path.absolute(), name=name, out=out, seed=seed, naming=naming, subtype=FORMATS[fmt],
                    rate=rate, model=model, backend=backend, threads=threads, categories=tuple(plans),
                    sounds=planned, lines=dict(lines))


def _seeds(check: _Checker, where: str, table: Mapping[str, Any], count: int, base: int, category: str) -> list[int]:
    if "seed" in table and "seeds" in table:
        raise check.fail(where, "seeds", "give either seed (the first of count consecutive seeds) or seeds, not both")
    if "seeds" in table:
        seeds = table["seeds"]
        if not isinstance(seeds, list) or len(seeds) != count:
            raise check.fail(where, "seeds", f"must be a list of exactly count = {count} seeds, got {seeds!r}")
        seeds = [check.integer(where, "seeds", s, 0, MAX_SEED) for s in seeds]
        if len(set(seeds)) != len(seeds):
            raise check.fail(where, "seeds", "holds the same seed twice (it would make the same sound twice)")
        return seeds
    if "seed" in table:
        first = check.integer(where, "seed", table["seed"], 0, MAX_SEED - count + 1)
        return [first + i for i in range(count)]
    return [derived_seed(base, category, i + 1) for i in range(count)]


def _name(check: _Checker, naming: Any, pack: str, sound: Mapping[str, Any]) -> str:
    """The file name of one sound from the naming pattern, checked to stay inside the pack folder."""
    if not isinstance(naming, str) or not naming:
        raise check.fail("pack", "naming", f"must be a pattern such as '{DEFAULT_NAMING}', got {naming!r}")
    for _, fieldname, _, _ in string.Formatter().parse(naming):
        if fieldname is not None and fieldname not in PLACEHOLDERS:
            raise check.fail("pack", "naming", f"unknown placeholder {{{fieldname}}}; allowed: "
                                               f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    try:
        name = naming.format(pack=pack, category=sound["category"], index=sound["index"], seed=sound["seed"],
                             layer=sound["layer"], variation=sound["variation"])
    except (ValueError, IndexError, KeyError) as exc:
        raise check.fail("pack", "naming", f"is not a valid pattern ({exc}); e.g. '{DEFAULT_NAMING}'") from None
    parts = PurePosixPath(name).parts
    bad = (not name.lower().endswith(".wav") or name.startswith("/") or "\\" in name
           or any(p in ("..", ".") or p.startswith(".") or not p.strip() for p in parts))
    if bad or re.search(r'[<>:"|?*\x00-\x1f]', name):
        raise check.fail("pack", "naming", f"gives '{name}'; a name must end in .wav and stay inside the pack "
                                           "folder (relative, no '..', no part starting with '.', no <>:\"|?*)")
    return name

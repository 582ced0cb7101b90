"""Kits a sampler loads: the pack mapped to MIDI notes as an SFZ instrument or a Decent Sampler preset.

Notes follow the companion's pad map (:mod:`companion.config.padmap`, General MIDI drums): each category
plays on the first pad of the default 4x4 grid that renders it (kick 36, snare 38, clap 39, closed hat 42,
open hat 46, tom 41, perc 37); categories without a GM drum sound (bass, synth, fx...) get the notes from
:data:`EXTRA_NOTES_FROM` up, in spec order. ``note`` in a category's table overrides.

A category's sounds are split into its velocity layers (``velocity_layers``, equal velocity ranges,
softest first) and, within a layer, played in turn (round robin: SFZ ``seq_length``/``seq_position``,
Decent Sampler ``seqMode="round_robin"``). Choke groups follow the pad map too: the open hat is in
group 1 and the closed hat cuts it. In SFZ a region belongs to one ``group`` and is silenced by one
``off_by``, so a category in choke group g gets ``group=g`` and ``off_by=CUTTER_BASE + g``, and every
category that cuts g plays in group ``CUTTER_BASE + g``. Decent Sampler uses tags the same way.
Sounds are one-shots: a note-off never cuts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from companion.config.padmap import default_config
from companion.output.folder import atomic_write
from companion.pack.spec import PackSpec, Sound, SpecError

KITS = ("sfz", "dspreset")
EXTRA_NOTES_FROM = 84  # above the GM percussion key map (35..81)
CUTTER_BASE = 32  # SFZ groups of the categories that cut choke group g: 32 + g (pad-map groups are 1..31)


@dataclass(frozen=True)
class KitPad:
    """One category on one note: its sounds by layer (softest first), each layer in round-robin order."""

    category: str
    note: int
    layers: tuple[tuple[Sound, ...], ...]
    choke: int  # 0: none
    cuts: tuple[int, ...]

    def velocity_range(self, layer: int) -> tuple[int, int]:
        """The velocities (1..127) of layer ``layer`` (0-based), equal slices softest first."""
        n = len(self.layers)
        return layer * 127 // n + 1, (layer + 1) * 127 // n


def _pad_defaults() -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """category -> (note, choke, cuts) from the default pad map: the first grid pad that renders it."""
    found: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    for pad in default_config()["pads"]:
        if pad["category"] and pad["category"] not in found:
            found[pad["category"]] = (pad["note"], pad["choke"], tuple(pad["cuts"]))
    return found


def kit_pads(spec: PackSpec) -> list[KitPad]:
    """The kit's pads for ``spec``; a clash (two categories on one note, a cutter that is choked) is a SpecError."""
    defaults = _pad_defaults()
    extra = EXTRA_NOTES_FROM
    pads, used = [], {}
    for plan in spec.categories:
        note, choke, cuts = defaults.get(plan.name, (None, 0, ()))
        if plan.note is not None:
            note = plan.note
        if note is None:
            while extra in used or extra in (d[0] for d in defaults.values()):
                extra += 1
            note = extra
        choke = plan.choke if plan.choke is not None else choke
        cuts = plan.cuts if plan.cuts is not None else cuts
        where = f"categories.{plan.name}"
        line = spec.line_of(where)
        prefix = f"{spec.path.name}{f' line {line}' if line else ''}: [{where}]"
        if note in used:
            raise SpecError(f"{prefix}: note {note} is already the note of '{used[note]}'; give one a 'note'")
        if choke and cuts:
            raise SpecError(f"{prefix}: a kit category is either in a choke group (choke) or cuts groups (cuts), "
                            "not both: SFZ gives a region one group")
        if len(cuts) > 1:
            raise SpecError(f"{prefix}: cuts may name one choke group in a kit, got {list(cuts)}")
        used[note] = plan.name
        sounds = [s for s in spec.sounds if s.category == plan.name]
        per_layer = plan.count // plan.velocity_layers
        layers = tuple(tuple(sounds[k * per_layer:(k + 1) * per_layer]) for k in range(plan.velocity_layers))
        pads.append(KitPad(plan.name, note, layers, choke, tuple(cuts)))
    return pads


def sfz_text(spec: PackSpec) -> str:
    """The SFZ instrument of the pack (sample paths relative to the pack folder, where the file goes)."""
    lines = [f"// {spec.name}: a dd-companion kit ({len(spec.sounds)} sounds)", "// made by 'dd-companion pack "
             "--kit sfz'; notes follow General MIDI drums", "", "<global>", "loop_mode=one_shot", "amp_veltrack=100",
             ""]
    for pad in kit_pads(spec):
        for k, layer in enumerate(pad.layers):
            low, high = pad.velocity_range(k)
            lines.append(f"<group> // {pad.category}, layer {k + 1} of {len(pad.layers)}")
            lines.append(f"key={pad.note} lovel={low} hivel={high} seq_length={len(layer)}")
            if pad.choke:
                lines.append(f"group={pad.choke} off_by={CUTTER_BASE + pad.choke} off_mode=fast")
            elif pad.cuts:
                lines.append(f"group={CUTTER_BASE + pad.cuts[0]}")
            for position, sound in enumerate(layer, start=1):
                lines.append(f"<region> seq_position={position} sample={sound.name}")
            lines.append("")
    return "\n".join(lines)


def dspreset_text(spec: PackSpec) -> str:
    """The Decent Sampler preset of the same kit."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<DecentSampler minVersion="1.0.0">',
           '  <groups ampVelTrack="1" pitchKeyTrack="0" attack="0" decay="0" sustain="1" release="30">']
    for pad in kit_pads(spec):
        for k, layer in enumerate(pad.layers):
            low, high = pad.velocity_range(k)
            attrs = {"name": f"{pad.category} {k + 1}", "loVel": low, "hiVel": high, "seqMode": "round_robin",
                     "seqLength": len(layer)}
            if pad.choke:
                attrs.update(tags=f"choke{pad.choke}", silencedByTags=f"cut{pad.choke}", silencingMode="fast")
            elif pad.cuts:
                attrs.update(tags=f"cut{pad.cuts[0]}")
            out.append(f"    <group {_attrs(attrs)}>")
            for position, sound in enumerate(layer, start=1):
                sample = {"path": sound.name, "rootNote": pad.note, "loNote": pad.note, "hiNote": pad.note,
                          "loVel": low, "hiVel": high, "seqPosition": position}
                out.append(f"      <sample {_attrs(sample)}/>")
            out.append("    </group>")
    out += ["  </groups>", "</DecentSampler>", ""]
    return "\n".join(out)


def _attrs(attrs: dict[str, object]) -> str:
    return " ".join(f"{key}={quoteattr(str(value))}" for key, value in attrs.items())


def write_kit(spec: PackSpec, kind: str) -> Path:
    """Write ``<out>/<name>.sfz`` or ``.dspreset`` atomically; return its path."""
    if kind not in KITS:
        raise SpecError(f"kit must be one of {', '.join(KITS)}, got {kind!r}")
    text = sfz_text(spec) if kind == "sfz" else dspreset_text(spec)
    path = spec.out / f"{spec.name}.{kind}"
    spec.out.mkdir(parents=True, exist_ok=True)
    atomic_write([(path, [text.encode("utf-8")])])
    return path

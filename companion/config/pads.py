"""Pads: a pad number (for MIDI pads, the note number) names the category its hits render.

The default map follows the General MIDI percussion key map (channel 10), so a drum controller or
a DAW drum rack sends the note of a kick and gets a kick. Sounds the model has no category for are
mapped to the nearest one it has (cymbals to ``open_hat``, hand percussion to ``perc``). The MIDI
input and the GUI reuse this table; the category names are those of the shipped default model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from models.errors import DDError

_GM_DRUMS: dict[str, tuple[int, ...]] = {
    "kick": (35, 36),  # acoustic bass drum, bass drum 1
    "snare": (38, 40),  # acoustic snare, electric snare
    "clap": (39,),  # hand clap
    "closed_hat": (42, 44),  # closed hi-hat, pedal hi-hat
    "open_hat": (46, 49, 51, 52, 53, 55, 57, 59),  # open hi-hat; crash, ride, china, splash cymbals
    "tom": (41, 43, 45, 47, 48, 50),  # low floor .. high tom
    "perc": (37, 54, 56, 58, *range(60, 82)),  # side stick, tambourine, cowbell, vibraslap, latin percussion
}

DEFAULT_PAD_MAP: Mapping[int, str] = MappingProxyType(
    {note: category for category, notes in _GM_DRUMS.items() for note in notes}
)
"""note number (0..127) -> category name."""


class PadError(DDError):
    """A pad that is not in the pad map, or that maps to a category the loaded model does not have."""

    code = "not_found"


def check_pad_map(pads: Mapping[int, str]) -> dict[int, str]:
    """A copy of ``pads`` after checking every note (0..127) and category (non-empty string)."""
    checked: dict[int, str] = {}
    for note, category in pads.items():
        if isinstance(note, bool) or not isinstance(note, int) or not 0 <= note <= 127:
            raise PadError(f"pad numbers must be integers in 0..127, got {note!r}")
        if not isinstance(category, str) or not category:
            raise PadError(f"pad {note} must map to a category name, got {category!r}")
        checked[note] = category
    return checked


def pad_category(pad: int, categories: Sequence[str], pads: Mapping[int, str] = DEFAULT_PAD_MAP) -> str | None:
    """The category pad ``pad`` renders with a model that has ``categories``.

    An unconditional model (no categories) renders every pad: the answer is None. Otherwise the pad
    must be mapped and its category must be one of the model's (compared case-insensitively).
    """
    if not categories:
        return None
    category = pads.get(pad)
    if category is None:
        mapped = sorted(pads)
        span = f"{mapped[0]}..{mapped[-1]}" if mapped else "none"
        raise PadError(f"pad {pad} is not in the pad map (mapped pads: {span})")
    for name in categories:
        if name.lower() == category.lower():
            return name
    raise PadError(f"pad {pad} plays '{category}', which the loaded model does not have; "
                   f"its categories are: {', '.join(categories)}")

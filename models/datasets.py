"""Training data sources: a folder of audio files, the NSynth layout, and the built-in synthesizer.

Every source hands out item ``index`` as ``(audio float32 [channels, sample_size] at the model rate,
label int or None)``, and item ``index`` is a pure function of the index and the source's seed (random
crops draw from a generator seeded with both). The trainer asks for items ``step * batch + k``, so a
resumed run sees exactly the data an uninterrupted run would have seen, with no loader state to save.

Files at another sample rate are resampled to the model rate with soxr (very high quality) when they are
decoded; mono is duplicated to stereo and extra channels are dropped (Dance Diffusion's own rule). Short
files are zero-padded at the end. One-shots are cropped from their start (so the transient stays at
sample 0); loops take a random window (``random_crop``).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models import synth
from models.audio_io import AUDIO_SUFFIXES, AudioFileError, load_audio
from models.config import ModelConfig
from models.errors import ConfigError, DDError
from models.finish import fade_in_of, high_cut_of, low_cut_of

log = logging.getLogger("dd.datasets")

Item = tuple[np.ndarray, "int | None"]
NSYNTH_CACHE_ITEMS = 4096  # decoded NSynth notes kept in memory (the train split has ~300k)


class DatasetError(DDError):
    """Training data is missing, unreadable, or does not fit the model being trained."""

    code = "bad_dataset"


def item_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one item's random choices (crop offset, augmentation), independent of batching."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


class AudioSource:
    """Base of the data sources: fixed format, a category list (empty = unconditional), indexable items."""

    kind = "base"

    def __init__(self, sample_rate: int, sample_size: int, channels: int, categories: Sequence[str],
                 seed: int) -> None:
        if sample_size < 1:
            raise ConfigError(f"sample_size must be a positive number of samples, got {sample_size}")
        self.sample_rate = int(sample_rate)
        self.sample_size = int(sample_size)
        self.channels = int(channels)
        self.categories: tuple[str, ...] = tuple(categories)
        self.seed = int(seed)
        # data label -> model label, set by fit_to_model when a fine-tune's categories are a reordering or
        # superset of the data's; None keeps labels as they are
        self.label_map: dict[int, int] | None = None
        self.drop_labels = False  # train a conditional-data source unconditionally

    def raw_item(self, index: int) -> Item:
        raise NotImplementedError

    def __len__(self) -> int:
        """Number of distinct items (files); the synthesizer is endless and reports 0."""
        return 0

    def spec(self) -> dict[str, Any]:
        """Plain description stored in a training checkpoint to rebuild (and check) the source on resume."""
        return {"kind": self.kind, "sample_rate": self.sample_rate, "sample_size": self.sample_size,
                "channels": self.channels, "categories": list(self.categories), "seed": self.seed}

    @property
    def conditional(self) -> bool:
        return bool(self.categories) and not self.drop_labels

    def item(self, index: int) -> Item:
        """Item ``index`` with labels mapped to the model's categories (or dropped)."""
        audio, label = self.raw_item(index)
        if label is None or self.drop_labels:
            return audio, None
        if self.label_map is not None:
            label = self.label_map[label]
        return audio, int(label)

    def __iter__(self) -> Iterator[Item]:
        index = 0
        while True:
            yield self.item(index)
            index += 1

    def describe(self) -> str:
        cats = f"{len(self.categories)} categories" if self.categories else "unconditional"
        return f"{self.kind} ({cats}, {self.sample_size} samples at {self.sample_rate} Hz)"


# --- files on disk -----------------------------------------------------------------------------------


class _FileSource(AudioSource):
    """Shared by the folder and NSynth sources: a list of (path, label), decoded and cached."""

    def __init__(self, files: Sequence[tuple[Path, int | None]], categories: Sequence[str], *, sample_rate: int,
                 sample_size: int, channels: int, random_crop: bool, seed: int, preload: bool,
                 skip_bad: bool, cache_items: int | None) -> None:
        super().__init__(sample_rate, sample_size, channels, categories, seed)
        self.random_crop = bool(random_crop)
        self.skip_bad = bool(skip_bad)
        self.files = list(files)
        self.skipped: list[tuple[Path, str]] = []
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_items = cache_items
        self._order_cache: dict[int, np.ndarray] = {}
        if preload:
            self._preload()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: Path) -> np.ndarray:
        audio = load_audio(path, self.sample_rate, self.channels)
        if not self.random_crop:  # one-shots only ever use the start: keep just that in memory
            audio = np.ascontiguousarray(audio[:, : self.sample_size])
        return audio

    def _preload(self) -> None:
        kept: list[tuple[Path, int | None]] = []
        for path, label in tqdm(self.files, desc="decoding audio", unit="file", leave=False,
                                disable=len(self.files) < 50):
            try:
                self._cache[len(kept)] = self._decode(path)
            except AudioFileError as exc:
                if not self.skip_bad:
                    raise DatasetError(f"unreadable training file '{path}': {exc}") from None
                self.skipped.append((path, str(exc)))
                continue
            kept.append((path, label))
        if self.skipped:
            names = ", ".join(p.name for p, _ in self.skipped[:10])
            more = f" and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            log.warning("skipped %d unreadable file(s): %s%s", len(self.skipped), names, more)
        if not kept:
            raise DatasetError(
                f"none of the {len(self.files)} audio files could be read (first: '{self.files[0][0]}': "
                f"{self.skipped[0][1]})"
            )
        self._check_categories_have_files(kept)
        self.files = kept
        self._cache_items = None  # everything stays

    def _check_categories_have_files(self, files: Sequence[tuple[Path, int | None]]) -> None:
        present = {label for _, label in files}
        empty = [c for i, c in enumerate(self.categories) if i not in present]
        if empty:
            raise DatasetError(f"categories {empty} have no readable audio files; every category needs at "
                               "least one (remove the folder or add files)")

    def _audio(self, file_index: int) -> np.ndarray:
        cached = self._cache.get(file_index)
        if cached is not None:
            self._cache.move_to_end(file_index)
            return cached
        path = self.files[file_index][0]
        try:
            audio = self._decode(path)
        except AudioFileError as exc:
            raise DatasetError(f"unreadable training file '{path}': {exc}") from None
        self._cache[file_index] = audio
        if self._cache_items is not None and len(self._cache) > self._cache_items:
            self._cache.popitem(last=False)
        return audio

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """A fresh shuffle of the files for each pass, seeded by (seed, epoch)."""
        order = self._order_cache.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.files))
            self._order_cache = {epoch: order}  # only the current pass is needed
        return order

    def raw_item(self, index: int) -> Item:
        n = len(self.files)
        file_index = int(self._epoch_order(index // n)[index % n])
        audio = self._audio(file_index)
        length = audio.shape[1]
        if self.random_crop and length > self.sample_size:
            offset = int(item_rng(self.seed, index, 1).integers(0, length - self.sample_size + 1))
            audio = audio[:, offset: offset + self.sample_size]
        out = np.zeros((self.channels, self.sample_size), dtype=np.float32)
        take = min(length, self.sample_size)
        out[:, :take] = audio[:, :take]
        return out, self.files[file_index][1]

    def spec(self) -> dict[str, Any]:
        return dict(super().spec(), random_crop=self.random_crop, files=len(self.files))


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted), skipping hidden files and folders."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            found.append(path)
    return found


class FolderSource(_FileSource):
    """A folder of audio files; first-level subfolders are the categories (sorted by name).

    Files directly in the folder make an unconditional source, as does ``unconditional=True`` (which
    takes every file under the folder). Mixing top-level files with category folders is refused, since
    it is unclear which the user meant.
    """

    kind = "folder"

    def __init__(self, folder: str | Path, *, sample_rate: int, sample_size: int, channels: int = 2,
                 random_crop: bool = False, unconditional: bool = False, seed: int = 0,
                 skip_bad: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.unconditional = bool(unconditional)
        if not self.folder.is_dir():
            raise DatasetError(f"training folder '{self.folder}' does not exist or is not a folder")
        files = _audio_files(self.folder)
        if not files:
            entries = [p for p in self.folder.rglob("*") if p.is_file()]
            what = "is empty" if not entries else f"holds {len(entries)} files but none with an audio suffix"
            raise DatasetError(f"training folder '{self.folder}' {what}; allowed: {', '.join(AUDIO_SUFFIXES)}")
        top = [p for p in files if p.parent == self.folder]
        if self.unconditional:
            categories: list[str] = []
            labelled: list[tuple[Path, int | None]] = [(p, None) for p in files]
        elif top and len(top) < len(files):
            raise DatasetError(
                f"training folder '{self.folder}' has {len(top)} audio files at its top level (e.g. "
                f"'{top[0].name}') next to category subfolders; move them into a category folder, or pass "
                "--unconditional to use every file without categories"
            )
        elif top:
            categories, labelled = [], [(p, None) for p in files]
        else:
            subdirs = sorted(p.name for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            categories = subdirs
            labelled = [(p, subdirs.index(p.relative_to(self.folder).parts[0])) for p in files]
            empty = [c for i, c in enumerate(categories) if all(lab != i for _, lab in labelled)]
            if empty:
                raise DatasetError(
                    f"category folders {empty} in '{self.folder}' hold no audio files; every category needs at "
                    f"least one ({', '.join(AUDIO_SUFFIXES)}) - remove the empty folders or add files"
                )
        super().__init__(labelled, categories, sample_rate=sample_rate, sample_size=sample_size, channels=channels,
                         random_crop=random_crop, seed=seed, preload=True, skip_bad=skip_bad, cache_items=None)

    def spec(self) -> dict[str, Any]:
        return dict(super().spec(), path=str(self.folder.resolve()), unconditional=self.unconditional)


class NSynthSource(_FileSource):
    """The NSynth layout: ``examples.json`` (note -> {instrument_family_str, ...}) and ``audio/<note>.wav``.

    The category is ``instrument_family_str``. Notes are decoded lazily (a split has up to ~300k) and the
    most recent ones kept in memory; a missing audio file is refused up front.
    """

    kind = "nsynth"

    def __init__(self, folder: str | Path, *, sample_rate: int, sample_size: int, channels: int = 2,
                 random_crop: bool = False, unconditional: bool = False, seed: int = 0,
                 skip_bad: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.unconditional = bool(unconditional)
        meta_path = self.folder / "examples.json"
        if not meta_path.is_file():
            raise DatasetError(f"'{self.folder}' is not an NSynth folder: it has no examples.json")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"cannot read '{meta_path}': {exc}") from None
        if not isinstance(meta, dict) or not meta:
            raise DatasetError(f"'{meta_path}' must be a non-empty JSON object of notes, got {type(meta).__name__}")
        notes: list[tuple[Path, str]] = []
        missing: list[str] = []
        for note in sorted(meta):
            info = meta[note]
            family = info.get("instrument_family_str") if isinstance(info, dict) else None
            if not isinstance(family, str) or not family:
                raise DatasetError(f"note '{note}' in '{meta_path}' has no instrument_family_str")
            path = self.folder / "audio" / f"{note}.wav"
            if not path.is_file():
                missing.append(note)
                continue
            notes.append((path, family))
        if missing and (not skip_bad or not notes):
            raise DatasetError(f"{len(missing)} notes in '{meta_path}' have no audio file under "
                               f"'{self.folder / 'audio'}' (e.g. '{missing[0]}.wav')")
        if missing:
            log.warning("skipped %d notes without an audio file (e.g. %s.wav)", len(missing), missing[0])
        categories = [] if self.unconditional else sorted({family for _, family in notes})
        labelled = [(p, None if self.unconditional else categories.index(f)) for p, f in notes]
        super().__init__(labelled, categories, sample_rate=sample_rate, sample_size=sample_size, channels=channels,
                         random_crop=random_crop, seed=seed, preload=False, skip_bad=skip_bad,
                         cache_items=NSYNTH_CACHE_ITEMS)

    def spec(self) -> dict[str, Any]:
        return dict(super().spec(), path=str(self.folder.resolve()), unconditional=self.unconditional)


# --- the built-in synthesizer ------------------------------------------------------------------------


class SynthSource(AudioSource):
    """Unlimited fresh one-shots from :mod:`models.synth`; item i has category i mod 10, so any run of
    consecutive items is balanced across the categories."""

    kind = "synth"

    def __init__(self, *, sample_rate: int, sample_size: int, channels: int = 2, seed: int = 0,
                 unconditional: bool = False) -> None:
        if channels != 2:
            raise DatasetError(f"the synthesizer makes stereo sounds; model channels must be 2, got {channels}")
        super().__init__(sample_rate, sample_size, channels, () if unconditional else synth.CATEGORIES, seed)
        self.unconditional = bool(unconditional)

    def raw_item(self, index: int) -> Item:
        audio, label = synth.example(self.seed, int(index), self.sample_size, self.sample_rate)
        return audio, None if self.unconditional else int(label)

    def spec(self) -> dict[str, Any]:
        return dict(super().spec(), unconditional=self.unconditional)


# --- batches, augmentation, fitting data to a model ---------------------------------------------------


def augment(audio: np.ndarray, rng: np.random.Generator, *, gain_db: float = 0.0) -> np.ndarray:
    """Dance Diffusion's random phase inversion (p = 0.5), an optional random gain of +-``gain_db``, then the
    upstream clamp to [-1, 1]."""
    out = audio * np.float32(-1.0 if rng.random() < 0.5 else 1.0)
    if gain_db:
        out = out * np.float32(10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def make_batch(source: AudioSource, start: int, size: int, *, gain_db: float = 0.0,
               augment_data: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Items ``start .. start+size-1``, augmented: (float32 [size, channels, n], int64 labels or None)."""
    audio = np.empty((size, source.channels, source.sample_size), dtype=np.float32)
    labels: list[int | None] = []
    for k in range(size):
        x, label = source.item(start + k)
        audio[k] = augment(x, item_rng(source.seed, start + k, 2), gain_db=gain_db) if augment_data else x
        labels.append(label)
    if any(label is None for label in labels):
        return audio, None
    return audio, np.asarray(labels, dtype=np.int64)


def fit_to_model(source: AudioSource, config: ModelConfig, *, unconditional: bool = False) -> None:
    """Check that ``source`` can train a model of ``config``, mapping category names to the model's labels.

    The data's categories must all be among the model's (case-insensitive; fine-tuning on a subset, e.g.
    only kicks, is allowed). Unconditional data cannot train a model with categories, and categorized data
    trains an unconditional model only when asked (``unconditional``); :func:`models.train.add_categories`
    gives an unconditional model fresh categories instead.
    """
    if source.sample_rate != config.sample_rate or source.sample_size != config.sample_size:
        raise DatasetError(
            f"data is {source.sample_size} samples at {source.sample_rate} Hz but model '{config.name}' takes "
            f"{config.sample_size} at {config.sample_rate} Hz"
        )
    if source.channels != config.channels:
        raise DatasetError(f"data has {source.channels} channels, model '{config.name}' has {config.channels}")
    if not config.categories:
        if source.categories and not unconditional:
            raise DatasetError(
                f"model '{config.name}' is unconditional but the data has categories {list(source.categories)}; "
                "pass --unconditional to train without them, or --add-categories to give the model categories"
            )
        source.drop_labels = bool(source.categories)
        return
    if not source.categories:
        raise DatasetError(
            f"model '{config.name}' has categories {list(config.categories)} but the data has none; put the "
            "files in subfolders named after those categories"
        )
    lowered = [c.lower() for c in config.categories]
    unknown = [c for c in source.categories if c.lower() not in lowered]
    if unknown:
        raise DatasetError(
            f"data categories {list(source.categories)} do not match model '{config.name}' categories "
            f"{list(config.categories)}: {unknown} are not in the model (rename the folders, or train a new model)"
        )
    mapping = {i: lowered.index(c.lower()) for i, c in enumerate(source.categories)}
    source.label_map = None if all(i == j for i, j in mapping.items()) else mapping
    source.drop_labels = False


MEASURE_ITEMS = 256  # sounds per category the trainer measures a model's band limits and onset fades on


@dataclass(frozen=True)
class FinishMeasures:
    """What the finish stage needs to know of each category's training sounds (``ModelConfig`` fields)."""

    low_cut_hz: tuple[float, ...]
    high_cut_hz: tuple[float, ...]
    fade_in_ms: tuple[float, ...]


def measure_finish(source: AudioSource, config: ModelConfig, per_category: int = MEASURE_ITEMS) -> FinishMeasures:
    """``config.low_cut_hz``, ``high_cut_hz`` and ``fade_in_ms`` measured on ``source`` (already fitted to ``config``
    by :func:`fit_to_model`): each category's (:func:`models.finish.low_cut_of`, ``high_cut_of``, ``fade_in_of``)
    over its first ``per_category`` items; categories the data does not have keep the model's (0 if it has none).
    Loops (``random_crop``) get no onset fades."""
    if not config.categories or not source.conditional:
        return FinishMeasures(config.low_cut_hz, config.high_cut_hz, config.fade_in_ms)
    found: list[list[np.ndarray]] = [[] for _ in config.categories]
    wanted = {label for label in (source.label_map or {i: i for i in range(len(source.categories))}).values()}
    end = len(source) or per_category * len(config.categories)
    for index in range(end):
        audio, label = source.item(index)
        if label is not None and len(found[label]) < per_category:
            found[label].append(audio)
        if all(len(found[k]) >= per_category for k in wanted):
            break
    n, rate = len(config.categories), source.sample_rate

    def measured(rule: Callable[[list[np.ndarray], int], float], kept: tuple[float, ...]) -> tuple[float, ...]:
        kept = kept or (0.0,) * n
        return tuple(rule(found[k], rate) if found[k] else kept[k] for k in range(n))

    # a loop's window starts anywhere: its first samples are the crop's, not a sound's onset (no fade, like no end fade)
    fades = (0.0,) * n if getattr(source, "random_crop", False) else measured(fade_in_of, config.fade_in_ms)
    return FinishMeasures(measured(low_cut_of, config.low_cut_hz), measured(high_cut_of, config.high_cut_hz), fades)


def open_source(kind: str, *, path: str | Path | None = None, sample_rate: int, sample_size: int,
                channels: int = 2, random_crop: bool = False, unconditional: bool = False, seed: int = 0,
                skip_bad: bool = True) -> AudioSource:
    """Build a source by kind name: 'folder' or 'nsynth' (with ``path``), or 'synth'."""
    common = dict(sample_rate=sample_rate, sample_size=sample_size, channels=channels, seed=seed)
    if kind == "synth":
        if random_crop:
            raise ConfigError("random_crop does not apply to the synthesizer (its sounds start at sample 0)")
        return SynthSource(unconditional=unconditional, **common)
    if kind not in ("folder", "nsynth"):
        raise ConfigError(f"data source kind must be one of ['folder', 'nsynth', 'synth'], got '{kind}'")
    if path is None:
        raise ConfigError(f"data source '{kind}' needs a path")
    cls = FolderSource if kind == "folder" else NSynthSource
    return cls(path, random_crop=random_crop, unconditional=unconditional, skip_bad=skip_bad, **common)

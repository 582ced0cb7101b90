"""The watched output folder, organised like a sample pack and written so a DAW never sees half a file.

Layout and names (``<cat>`` is the category slug: lower-case ASCII letters/digits joined by ``_``;
unconditional models use ``sample``; ``<nnnn>`` is a per-category counter, zero-padded to 4 digits)::

    <root>/.dd-companion-manifest.json        files the companion created (only these are ever deleted)
    <root>/<Category>/dd_<cat>_<seed>_<nnnn>.wav            kind "generate"   Kick/dd_kick_123456_0001.wav
    <root>/<Category>/dd_<cat>_var_<seed>_<nnnn>.wav        kind "variation"  Kick/dd_kick_var_123456_0002.wav
    <root>/<Category>/dd_<cat>_morph_<nnnn>_f<ff>.wav       kind "morph"      Kick/dd_kick_morph_0003_f07.wav
    <root>/<Category>/<same stem>.json                      sidecar: the full recipe plus file facts
    <root>/<Category>/.<final name>.<pid>.partial           a write in progress (hidden, not *.wav)

``<Category>`` is the slug title-cased with spaces (``hi_hat`` -> ``Hi Hat``). The counter is
shared by all kinds of one category and only grows: it starts above every counter found in the
folder and in the manifest, and a name whose WAV or sidecar already exists is skipped, so a file
is never overwritten and a name is never handed out twice (a DAW project that referenced a
sample deleted by auto-fill never silently gets another sound). All frames of one morph share
one counter, taken with :meth:`SampleFolder.reserve_series`, so they sort together.

Every file is written to its temporary name, flushed and fsynced, then moved into place with
``os.replace`` and the folder fsynced: the sidecar first, the WAV last, so a watcher that sees the
WAV can read its sidecar. A crash leaves at most a ``.partial`` file, which
:meth:`SampleFolder.cleanup_stale_temporaries` removes at the next start. On an error, the
temporaries and any file already moved into place are removed and the writer stays usable.

Auto-fill (``max_per_category``): after each write, the oldest companion-created files of that
category beyond the limit are deleted with their sidecars. Files not in the manifest, or whose
size no longer matches it (the user replaced them), belong to the user and are never touched.
One process per folder is assumed; within a process the writer is thread-safe.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np
import platformdirs
import soxr

from companion.output import wavfile
from models.errors import DDError

log = logging.getLogger(__name__)

MANIFEST_NAME = ".dd-companion-manifest.json"
KINDS = ("generate", "variation", "morph")
DEFAULT_CATEGORY = "sample"
_MAX_SLUG = 32
_TEMP_RE = re.compile(r"^\.((?:dd_[a-z0-9_]+\.(?:wav|json))|\.dd-companion-manifest\.json)\.(\d+)\.partial$")
_IN_FLIGHT: set[Path] = set()  # temporaries being written by this process (any SampleFolder)
_IN_FLIGHT_LOCK = threading.Lock()


class OutputError(DDError):
    """A sample could not be written to the output folder."""

    code = "output_error"


class DiskFullError(OutputError):
    """The disk (or the user's quota) ran out of space during a write."""

    code = "disk_full"


class FolderUnwritableError(OutputError):
    """The output folder is read-only, not permitted, or a file stands where a folder should be."""

    code = "folder_unwritable"


class OutputSettingError(OutputError, ValueError):
    """An argument of the writer (rate, subtype, category, kind, seed, recipe...) is not allowed."""

    code = "bad_output_setting"


def app_version() -> str:
    """The installed dd-companion version, or ``"0+unknown"`` when running from a bare checkout."""
    try:
        return metadata.version("dd-companion")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def default_output_folder() -> Path:
    """``<Music>/dd-companion``, else ``<Documents>/dd-companion``, else ``~/dd-companion``.

    A base folder is used only if it exists; the returned folder itself is not created.
    """
    for base in (platformdirs.user_music_dir(), platformdirs.user_documents_dir()):
        if base and Path(base).is_dir():
            return Path(base) / "dd-companion"
    return Path.home() / "dd-companion"


def category_slug(category: str | None) -> str:
    """``"Hi-Hat"`` -> ``"hi_hat"``; ``None`` or ``""`` -> ``"sample"`` (unconditional models)."""
    if category is None or category == "":
        return DEFAULT_CATEGORY
    if not isinstance(category, str):
        raise OutputSettingError(f"category must be a string such as 'kick', got {category!r}")
    ascii_text = unicodedata.normalize("NFKD", category).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    if not slug:
        raise OutputSettingError(f"category {category!r} has no ASCII letters or digits; use e.g. 'kick'")
    if len(slug) > _MAX_SLUG:
        raise OutputSettingError(f"category {category!r} is longer than {_MAX_SLUG} characters; shorten it")
    return slug


def category_folder(slug: str) -> str:
    """The sub-folder name for a category slug: ``"hi_hat"`` -> ``"Hi Hat"``."""
    return " ".join(part.capitalize() for part in slug.split("_"))


def sample_name(slug: str, kind: str, seed: int, number: int, frame: int | None = None) -> str:
    """The file name (with ``.wav``) for one sample; see the module docstring for the scheme."""
    if kind == "generate":
        return f"dd_{slug}_{seed}_{number:04d}.wav"
    if kind == "variation":
        return f"dd_{slug}_var_{seed}_{number:04d}.wav"
    if kind == "morph":
        return f"dd_{slug}_morph_{number:04d}_f{frame or 0:02d}.wav"
    raise OutputSettingError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _name_re(slug: str) -> re.Pattern[str]:
    """Names of any kind in one category; group ``n`` or ``m`` holds the counter."""
    s = re.escape(slug)
    return re.compile(rf"^dd_{s}_(?:(?:var_)?\d+_(?P<n>\d{{4,}})|morph_(?P<m>\d{{4,}})_f\d{{2,}})\.wav$")


def _as_int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= int(value) <= high:
        raise OutputSettingError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _to_json(doc: Any, *, compact: bool = False) -> str:
    if compact:
        return json.dumps(doc, default=_json_default, allow_nan=False, separators=(",", ":"))
    return json.dumps(doc, default=_json_default, allow_nan=False, indent=2)


def _translate(exc: OSError, target: Path) -> OutputError:
    """The specific :class:`OutputError` for an OS failure, naming the path and what to do."""
    folder = target if target.suffix not in (".wav", ".json") else target.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"disk full while writing {target}: free some space or choose another output folder"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FolderUnwritableError(
            f"cannot write to output folder {folder}: it is read-only or not permitted; "
            "fix its permissions or choose another output folder"
        )
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return FolderUnwritableError(
            f"cannot use {folder} as an output folder: it or one of its parents is a file; "
            "remove the file or choose another output folder"
        )
    return OutputError(
        f"could not write {target}: {exc.strerror or exc}; check the output folder and the disk"
    )


# The three OS calls below are module functions so tests can simulate failures (disk full,
# permission denied, a crash mid-write) without needing a real full disk or a non-root user.
def _open_temp(path: Path) -> IO[bytes]:
    return os.fdopen(
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644), "wb"
    )


def _write_all(f: IO[bytes], data: bytes) -> None:
    f.write(data)


def _fsync(fd: int) -> None:
    os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable. Windows cannot open folders; some file systems refuse (EINVAL)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        _fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


def _write_temp(final: Path, blocks: Iterable[bytes]) -> Path:
    """Write ``blocks`` to the temporary of ``final``, flushed and fsynced; return its path."""
    temp = _temp_path(final)
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.add(temp)
    with _open_temp(temp) as f:
        for block in blocks:
            _write_all(f, block)
        f.flush()
        _fsync(f.fileno())
    return temp


def _discard(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # keep the original error; this one is only worth a log line
            log.warning("could not remove %s: %s", path, exc)
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard(path)


def atomic_write(finals: list[tuple[Path, Iterable[bytes]]]) -> None:
    """Write files through temporaries and move them into place in order, all or nothing.

    Each ``(final, blocks)`` is written to ``.<name>.<pid>.partial`` in the same folder and then
    ``os.replace``-d onto ``final`` in list order (put the file a watcher reacts to last). On any
    failure the temporaries and the finals already placed are removed and an :class:`OutputError`
    is raised.
    """
    temps: list[Path] = []
    placed: list[Path] = []
    try:
        for final, blocks in finals:
            temps.append(_temp_path(final))
            _write_temp(final, blocks)
        for (final, _), temp in zip(finals, temps, strict=True):
            os.replace(temp, final)
            placed.append(final)
        for folder in dict.fromkeys(final.parent for final, _ in finals):
            _fsync_dir(folder)
    except OSError as exc:
        _discard(temps + placed)
        raise _translate(exc, finals[-1][0]) from exc
    except BaseException:
        _discard(temps + placed)
        raise
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.difference_update(temps)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a temporary it owns is not stale)."""
    if os.name == "nt":
        return False  # os.kill would terminate it; an open temporary resists deletion there anyway
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SampleFolder:
    """The companion's output folder. See the module docstring for layout, naming and safety.

    ``rate``: output sample rate (``None`` keeps the model's rate). ``subtype``: ``"PCM_24"``
    (default), ``"PCM_16"`` or ``"FLOAT"``. ``max_per_category``: keep at most this many
    companion-created samples per category (``None``: keep all).

    All instances in a process share one lock and one set of names being written, so the
    engine worker, the GUI and a second instance on the same folder never pick the same name.
    """

    _lock = threading.Lock()
    _reserved: set[Path] = set()  # final names being written right now (process-wide)
    _counters: dict[tuple[Path, str], int] = {}  # last counter handed out per (root, category)

    def __init__(
        self,
        root: str | Path,
        *,
        rate: int | None = None,
        subtype: str = "PCM_24",
        max_per_category: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.rate = None if rate is None else _as_int(rate, "output rate", 8000, 384000)
        if subtype not in wavfile.SUBTYPES:
            raise OutputSettingError(f"subtype must be one of {', '.join(wavfile.SUBTYPES)}, got {subtype!r}")
        self.subtype = subtype
        self.max_per_category = (
            None if max_per_category is None else _as_int(max_per_category, "max_per_category", 1, 10**6)
        )

    # -- naming ---------------------------------------------------------------------------------

    def category_dir(self, category: str | None) -> Path:
        """The folder that holds one category's samples (not created)."""
        return self.root / category_folder(category_slug(category))

    def _last_number(self, slug: str, folder: Path, manifest: dict) -> int:
        """Highest counter in use for ``slug`` (memory, manifest, names on disk); caller holds the lock."""
        key = (self.root, slug)
        if key not in self._counters:
            found = 0
            pattern = _name_re(slug)
            if folder.is_dir():
                for entry in os.scandir(folder):
                    match = pattern.match(entry.name)
                    if match:
                        found = max(found, int(match.group("n") or match.group("m")))
            self._counters[key] = found
        return max(self._counters[key], int(manifest["counters"].get(slug, 0)))

    def _take_number(self, slug: str, folder: Path) -> int:
        number = self._last_number(slug, folder, self._load_manifest()) + 1
        self._counters[(self.root, slug)] = number
        return number

    def reserve_series(self, category: str | None) -> int:
        """A fresh counter for a morph: pass it as ``series`` with every frame of that morph."""
        slug = category_slug(category)
        with self._lock:
            return self._take_number(slug, self.root / category_folder(slug))

    def _reserve_name(
        self, slug: str, folder: Path, kind: str, seed: int, frame: int | None, series: int | None
    ) -> Path:
        with self._lock:
            if series is None:
                number = self._take_number(slug, folder)
            else:  # keep the counter above the series so no other sample reuses its number
                number = series
                last = self._last_number(slug, folder, self._load_manifest())
                self._counters[(self.root, slug)] = max(last, series)
            while True:
                final = folder / sample_name(slug, kind, seed, number, frame)
                taken = final in self._reserved or final.exists() or final.with_suffix(".json").exists()
                if not taken:
                    self._reserved.add(final)
                    return final
                number = self._take_number(slug, folder)  # never overwrite: move to a fresh counter

    # -- writing --------------------------------------------------------------------------------

    def write(
        self,
        audio: np.ndarray,
        model_rate: int,
        *,
        category: str | None,
        seed: int,
        recipe: dict,
        kind: str = "generate",
        frame: int | None = None,
        series: int | None = None,
        loop: bool = False,
        tempo: float | None = None,
        beats: int | None = None,
    ) -> Path:
        """Write one sample (``[channels, frames]`` float at ``model_rate``) and its sidecar.

        Returns the WAV's path. ``recipe`` is any JSON-serialisable dict (model, hash, sampler,
        steps, strength, sources...); the sidecar and the WAV's ``ICMT`` hold it together with the
        file facts. ``frame`` (and optionally ``series`` from :meth:`reserve_series`) are for
        ``kind="morph"`` only; if that frame's name is already taken, the frame gets a fresh
        counter rather than overwrite anything (the returned path says which). ``loop``
        marks the ``acid`` chunk as a loop (with ``tempo``/``beats`` when known) instead of a one-shot.
        Raises :class:`OutputSettingError` for bad arguments, :class:`wavfile.WavError` for bad
        audio, :class:`DiskFullError` / :class:`FolderUnwritableError` / :class:`OutputError` for
        disk trouble; in every case nothing is left behind.
        """
        slug = category_slug(category)
        if kind not in KINDS:
            raise OutputSettingError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        seed = _as_int(seed, "seed", 0, 2**64 - 1)
        model_rate = _as_int(model_rate, "model_rate", 1000, 768000)
        if kind == "morph":
            frame = _as_int(frame, "morph frame", 0, 9999)
            series = None if series is None else _as_int(series, "morph series", 1, 10**9)
        elif frame is not None or series is not None:
            raise OutputSettingError(
                f"frame/series are only for kind 'morph', got kind {kind!r} with frame {frame!r}"
            )
        if not isinstance(recipe, dict):
            raise OutputSettingError(f"recipe must be a dict, got {type(recipe).__name__}")
        try:
            _to_json(recipe, compact=True)
        except (TypeError, ValueError) as exc:
            raise OutputSettingError(
                f"recipe must be JSON-serialisable (no NaN, no custom objects): {exc}"
            ) from exc

        if not isinstance(loop, bool):
            raise OutputSettingError(f"loop must be True or False, got {loop!r}")
        if tempo is not None and not (
            isinstance(tempo, int | float) and np.isfinite(tempo) and 0 < tempo <= 1000
        ):
            raise OutputSettingError(f"tempo must be a BPM in (0, 1000] or None, got {tempo!r}")

        audio = wavfile.check_audio(audio)
        out_rate = self.rate or model_rate
        if out_rate != model_rate:
            audio = np.ascontiguousarray(soxr.resample(audio.T, model_rate, out_rate, "VHQ").T)
        channels, frames = audio.shape
        seconds = frames / out_rate
        if beats is None and loop and tempo:
            beats = max(1, round(seconds * tempo / 60.0))
        beats = None if beats is None else _as_int(beats, "beats", 0, 100000)
        acid = wavfile.AcidInfo(one_shot=not loop, beats=beats or 0, tempo=float(tempo or 0.0))

        folder = self.root / category_folder(slug)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _translate(exc, folder) from exc
        final = self._reserve_name(slug, folder, kind, seed, frame, series)
        try:
            created = datetime.now().astimezone()
            version = app_version()
            doc = {
                "format": "dd-companion-sample/1",
                "app_version": version,
                "file": final.name,
                "category": slug,
                "kind": kind,
                "seed": seed,
                "frame": frame,
                "created": created.isoformat(timespec="seconds"),
                "model_rate": model_rate,
                "rate": out_rate,
                "subtype": self.subtype,
                "channels": channels,
                "frames": frames,
                "seconds": round(seconds, 6),
                "loop": loop,
                "tempo": tempo,
                "beats": beats,
                "recipe": recipe,
            }
            info = {
                "INAM": final.stem,
                "ISFT": f"dd-companion {version}",
                "ICMT": _to_json(doc, compact=True),
                "IGNR": category_folder(slug),
                "ICRD": created.date().isoformat(),
            }
            wav_blocks = wavfile.iter_wav(audio, out_rate, subtype=self.subtype, info=info, acid=acid)
            sidecar = (_to_json(doc) + "\n").encode("utf-8")
            atomic_write([(final.with_suffix(".json"), [sidecar]), (final, wav_blocks)])
            self._commit(slug, final, created)
        finally:
            with self._lock:
                self._reserved.discard(final)
        return final

    # -- manifest and auto-fill ----------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _load_manifest(self) -> dict:
        """The manifest from disk (empty if absent; a corrupt one is set aside, never trusted)."""
        empty: dict = {"format": "dd-companion-manifest/1", "counters": {}, "files": []}
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:
            doc = exc
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("files"), list)
            and isinstance(doc.get("counters"), dict)
        ):
            log.warning(
                "ignoring unreadable manifest %s (%s); its files are now treated as the user's",
                self.manifest_path,
                doc if isinstance(doc, Exception) else "bad structure",
            )
            try:
                os.replace(
                    self.manifest_path, self.manifest_path.with_name(".dd-companion-manifest.corrupt.json")
                )
            except OSError:
                pass
            return empty
        doc["files"] = [e for e in doc["files"] if self._valid_entry(e)]
        return doc

    def _valid_entry(self, entry: Any) -> bool:
        """Only an entry naming one of our WAVs directly inside its category folder is trusted."""
        try:
            slug, rel, size, seq = entry["category"], entry["path"], entry["size"], entry["seq"]
            parts = rel.split("/")
            return (
                isinstance(size, int)
                and isinstance(seq, int)
                and category_slug(slug) == slug
                and len(parts) == 2
                and parts[0] == category_folder(slug)
                and bool(_name_re(slug).match(parts[1]))
            )
        except (KeyError, TypeError, AttributeError, OutputSettingError):
            return False

    def _save_manifest(self, doc: dict) -> None:
        atomic_write([(self.manifest_path, [(_to_json(doc) + "\n").encode("utf-8")])])

    def _commit(self, slug: str, final: Path, created: datetime) -> None:
        """Record a new file in the manifest and apply auto-fill to its category."""
        try:
            size = final.stat().st_size
        except OSError:  # already removed by someone else: nothing to record
            return
        with self._lock:
            doc = self._load_manifest()
            seq = max((e["seq"] for e in doc["files"]), default=0) + 1
            doc["files"].append(
                {
                    "path": final.relative_to(self.root).as_posix(),
                    "category": slug,
                    "seq": seq,
                    "size": size,
                    "created": created.isoformat(timespec="seconds"),
                }
            )
            doc["counters"][slug] = max(
                int(doc["counters"].get(slug, 0)), self._counters.get((self.root, slug), 0)
            )
            self._prune(doc, slug)
            try:
                self._save_manifest(doc)
            except OutputError as exc:
                # The sample itself is safely in place; unrecorded, it is simply never auto-deleted.
                log.warning("sample %s written but the manifest could not be updated: %s", final, exc)

    def _prune(self, doc: dict, slug: str) -> None:
        """Forget entries the user removed or replaced; delete the oldest beyond the limit."""
        kept, mine = [], []
        for entry in doc["files"]:
            if entry["category"] != slug:
                kept.append(entry)
                continue
            path = self.root / entry["path"]
            try:
                if path.stat().st_size == entry["size"]:
                    mine.append(entry)
            except OSError:
                pass  # gone: the user deleted or moved it
        mine.sort(key=lambda e: e["seq"])
        excess = len(mine) - self.max_per_category if self.max_per_category is not None else 0
        for entry in mine[: max(excess, 0)]:
            path = self.root / entry["path"]
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # e.g. a DAW has it open on Windows: try again next time
                log.warning("auto-fill could not delete %s: %s", path, exc)
                kept.append(entry)
                continue
            path.with_suffix(".json").unlink(missing_ok=True)
        doc["files"] = kept + mine[max(excess, 0) :]

    # -- queries and start-up --------------------------------------------------------------------

    def companion_files(self, category: str | None = None) -> list[Path]:
        """WAVs the companion created that still exist, oldest first (one category if given)."""
        slug = None if category is None else category_slug(category)
        with self._lock:
            entries = sorted(self._load_manifest()["files"], key=lambda e: e["seq"])
        paths = [self.root / e["path"] for e in entries if slug is None or e["category"] == slug]
        return [p for p in paths if p.is_file()]

    def cleanup_stale_temporaries(self) -> int:
        """Remove ``.partial`` files left by a crashed writer; return how many were removed.

        Looks in the root and its category folders only, matches only the companion's own
        temporary-name pattern, and skips temporaries of this process's writes in progress and
        (on POSIX) of other running processes.
        """
        removed = 0
        try:
            folders = [self.root, *(p for p in self.root.iterdir() if p.is_dir())]
            candidates = [p for folder in folders for p in folder.iterdir()]
        except OSError:
            return 0  # no folder yet: nothing to clean
        for path in candidates:
            match = _TEMP_RE.match(path.name)
            if not match:
                continue
            with _IN_FLIGHT_LOCK:
                busy = path in _IN_FLIGHT
            if busy or (int(match.group(2)) != os.getpid() and pid_alive(int(match.group(2)))):
                continue
            try:
                path.unlink()
                removed += 1
            except OSError as exc:
                log.warning("could not remove stale temporary %s: %s", path, exc)
        return removed

"""A pack folder on disk: what is done, what is left, and ``manifest.json``; written so a crash loses nothing.

Every WAV goes through :func:`companion.output.folder.atomic_write` (temporary, fsync, rename, fsync
of the folder), so a WAV under its final name is always complete and a kill -9 leaves at most a hidden
``.<name>.<pid>.partial``, which the next run removes. ``manifest.json`` is written the same way: before
the first sound (status ``in progress``, every planned file with its recipe) and at the end (status
``complete``, every file's size and SHA-256 read back from disk). Resuming keeps a file only when the
manifest holds it with the same recipe; a file made from another recipe is refused, never overwritten.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from companion.output.folder import OutputError, app_version, atomic_write, pid_alive
from companion.pack.spec import PackSpec, Sound, SpecError
from models.known_models import file_sha256

MANIFEST = "manifest.json"
FORMAT = "dd-companion-pack/1"
_PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial$")


class PackStateError(OutputError):
    """The folder holds a pack this spec cannot resume (another model or recipe) or a broken manifest."""

    code = "bad_pack_folder"


@dataclass
class PackFolder:
    """The pack's output folder for one spec and one model (``facts``: the renderer's model facts)."""

    spec: PackSpec
    facts: dict[str, Any]
    recipes: dict[str, dict[str, Any]]  # sound name -> its recipe

    @property
    def root(self) -> Path:
        return self.spec.out

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def path_of(self, sound: Sound) -> Path:
        return self.root / sound.name

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise PackStateError(f"{self.manifest_path} cannot be read ({exc}); move it away to start the pack "
                                 "again (files already there are then checked against it)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), list):
            raise PackStateError(f"{self.manifest_path} is not a dd-companion pack manifest; use another 'out' folder")
        return doc

    def todo(self) -> tuple[list[Sound], bool]:
        """The sounds still to render, and whether the manifest already says the pack is complete.

        Refuses (:class:`PackStateError`) a folder made with another model or runtime settings, and a
        file whose recorded recipe differs from this spec's (it would be silently kept otherwise).
        """
        old = self.read_manifest()
        recorded: dict[str, dict[str, Any]] = {}
        if old is not None:
            render = old.get("render", {})
            differ = [k for k in ("model_hash", "backend", "threads", "runtime") if render.get(k) != self.facts.get(k)]
            if differ:
                raise PackStateError(
                    f"{self.root} holds a pack rendered with {', '.join(f'{k}={render.get(k)!r}' for k in differ)}; "
                    f"this run has {', '.join(f'{k}={self.facts.get(k)!r}' for k in differ)}, so its sounds would not "
                    "match: use the same model, threads and runtime version, or another 'out' folder")
            recorded = {e.get("path"): e.get("recipe") for e in old["files"] if isinstance(e, dict)}
        left = []
        for sound in self.spec.sounds:
            path = self.path_of(sound)
            if not path.exists():
                left.append(sound)
                continue
            if recorded.get(sound.name) != self.recipes[sound.name]:
                raise PackStateError(
                    f"{path} already exists but was not made from this spec's recipe for it (changed spec, or a file "
                    "of your own); move it away, or choose another 'out' folder")
        complete = old is not None and old.get("status") == "complete" and not left
        return left, complete

    def remove_stale_partials(self) -> int:
        """Remove the hidden temporaries a killed run left beside the pack's files; return how many."""
        wanted = {self.path_of(s).name for s in self.spec.sounds} | {MANIFEST}
        folders = {self.path_of(s).parent for s in self.spec.sounds} | {self.root}
        removed = 0
        for folder in folders:
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                match = _PARTIAL_RE.match(entry.name)
                if match and match.group("name") in wanted and (
                        int(match.group("pid")) == os.getpid() or not pid_alive(int(match.group("pid")))):
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    def write_sound(self, sound: Sound, data: bytes) -> Path:
        """Place one finished WAV atomically (its folder created); OutputError on disk trouble."""
        final = self.path_of(sound)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {final.parent}: {exc.strerror or exc}") from None
        atomic_write([(final, [data])])
        return final

    def write_manifest(self, status: str, extra: dict[str, Any] | None = None) -> Path:
        """manifest.json: the pack, the model, and every planned file with its recipe (and, when the file is
        there, its size and SHA-256 read back from disk)."""
        files = []
        for sound in self.spec.sounds:
            path = self.path_of(sound)
            entry: dict[str, Any] = {"path": sound.name, "category": sound.category, "index": sound.index,
                                     "seed": sound.seed, "layer": sound.layer, "variation": sound.variation,
                                     "recipe": self.recipes[sound.name]}
            if status == "complete" or path.exists():
                entry.update(bytes=path.stat().st_size, sha256=file_sha256(path))
            files.append(entry)
        doc = {"format": FORMAT, "pack": self.spec.name, "status": status, "spec": self.spec.path.name,
               "made_by": f"dd-companion {app_version()}", "render": self.facts, "sounds": len(files),
               **(extra or {}), "files": files}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the pack folder {self.root}: {exc.strerror or exc}") from None
        atomic_write([(self.manifest_path, [(json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()])])
        return self.manifest_path


def check_out_folder(spec: PackSpec) -> None:
    """The out folder must be a folder (or not exist yet)."""
    if spec.out.exists() and not spec.out.is_dir():
        line = spec.line_of("pack", "out")
        raise SpecError(f"{spec.path.name}{f' line {line}' if line else ''}: [pack] out: {spec.out} is a file, "
                        "not a folder")

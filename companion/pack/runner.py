"""Making a pack: check everything, skip what is done, render the rest here or on Ray, then the manifest and kit.

Order of work (so a bad spec or folder is refused before a single sound is rendered): the spec (already
checked by :func:`companion.pack.spec.load_spec`), the kit's note map, the model and what only it can
tell, the folder (another model's pack, a file from another recipe), then rendering with a progress bar
(sounds done, sounds per second, time left), then ``manifest.json`` with every file's SHA-256 and the kit.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from companion.pack.kit import kit_pads, write_kit
from companion.pack.render import Renderer, RenderSetup, check_against_model
from companion.pack.spec import PackSpec, Sound
from companion.pack.state import PackFolder, check_out_folder


@dataclass
class Summary:
    """What one run did."""

    name: str
    out: Path
    total: int
    rendered: int
    kept: int  # already there from an earlier run
    seconds: float
    complete_before: bool = False
    kit: Path | None = None
    ray: dict[str, Any] | None = None
    removed_partials: int = 0
    per_category: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        if self.complete_before:
            out = [f"pack '{self.name}' is already complete: {self.total} sounds in {self.out}; nothing to do"]
        else:
            out = [f"pack '{self.name}': {self.rendered} sound(s) rendered in {self.seconds:.1f} s "
                   f"({self.rate:.2f} sounds/s), {self.kept} already there; {self.total} in {self.out}",
                   "  " + ", ".join(f"{cat} {n}" for cat, n in self.per_category.items())]
            if self.removed_partials:
                out.append(f"  removed {self.removed_partials} unfinished temporary file(s) of an interrupted run")
            if self.ray:
                out.append(f"  ray: {self.ray['workers']} worker(s) ready in {self.ray['startup_s']:.1f} s, "
                           f"{self.ray['chunks']} chunk(s) in {self.ray['render_s']:.1f} s, "
                           f"{self.ray['retried']} retried after a worker died")
            out.append(f"  manifest: {self.out / 'manifest.json'}")
        if self.kit:
            out.append(f"  kit: {self.kit}")
        return out


def make_pack(spec: PackSpec, *, kit: str | None = None, ray: str | None = None, workers: int | None = None,
              chunk: int = 4, renderer: Renderer | None = None, stream: TextIO | None = sys.stderr) -> Summary:
    """Render what is missing of ``spec``'s pack and write its manifest (and kit). ``stream`` None: no bar."""
    check_out_folder(spec)
    if ray:
        from companion.pack.ray_run import import_ray  # Ray only for a pack that asks for it

        import_ray()  # not installed: say so before any work
    if kit:
        kit_pads(spec)  # a note clash is a spec error: refuse it now, not after the render
    setup = RenderSetup.of(spec)
    renderer = renderer or Renderer(setup)
    check_against_model(spec, renderer.config)
    folder = PackFolder(spec, renderer.fingerprint, {s.name: renderer.recipe(s) for s in spec.sounds})
    removed = folder.remove_stale_partials()
    todo, complete = folder.todo()
    per_category = {c.name: c.count for c in spec.categories}
    summary = Summary(spec.name, spec.out, len(spec.sounds), 0, len(spec.sounds) - len(todo), 0.0,
                      removed_partials=removed, per_category=per_category)
    if complete:
        summary.complete_before = True
        summary.kit = write_kit(spec, kit) if kit else None
        return summary
    folder.write_manifest("in progress")
    bar = tqdm(total=len(spec.sounds), initial=summary.kept, unit="sound", desc=spec.name, file=stream,
               disable=stream is None, dynamic_ncols=True, smoothing=0.1)

    def done(sound: Sound, data: bytes) -> None:
        folder.write_sound(sound, data)
        summary.rendered += 1
        bar.update(1)

    start = time.perf_counter()
    try:
        if ray:
            from companion.pack.ray_run import render_on_ray

            stats = render_on_ray(setup, renderer.fingerprint, todo, done, address=ray, workers=workers, chunk=chunk)
            summary.ray = vars(stats)
        else:
            for sound in todo:
                done(sound, renderer.render(sound))
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    extra = {"last_run": {"rendered": summary.rendered, "kept": summary.kept, "seconds": round(summary.seconds, 3),
                          "where": f"ray {ray}" if ray else "this machine", **({"ray": summary.ray} if ray else {})}}
    folder.write_manifest("complete", extra)
    summary.kit = write_kit(spec, kit) if kit else None
    return summary

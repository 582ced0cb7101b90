"""What the engine does with one batch and one finished item: render with the model, write with its recipe.

These functions hold no state and take no locks; the engine calls :func:`render` from its worker
thread and :func:`write_item` from its writer thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from companion.engine.jobs import Item, Job
from companion.engine.requests import ModelFacts
from companion.output.folder import SampleFolder
from models.audio_io import load_audio
from models.backend import Backend
from models.generate import applied_band, generate, morph, variation

MAX_SOURCE_SECONDS = 60.0  # longer sources are cut: a variation of a whole song is not a sample

Progress = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


def load_source(path: Path, model: ModelFacts) -> np.ndarray:
    """A source file as ``[channels, n]`` at the model's rate, at most :data:`MAX_SOURCE_SECONDS` long."""
    audio = load_audio(path, model.sample_rate, model.channels)
    return audio[:, : int(MAX_SOURCE_SECONDS * model.sample_rate)]


def render(job: Job, backend: Backend, seeds: Sequence[int], progress: Progress, cancel: CancelCheck) -> np.ndarray:
    """Audio ``[items, channels, n]`` for ``seeds`` (or every frame of a morph) of ``job``'s plan.

    Raises :class:`models.samplers.Cancelled` when ``cancel()`` turns True, and the model's own
    errors (a category the model does not have after a switch, a source too short...).
    """
    plan = job.plan
    if plan.kind in ("generate", "refill"):
        return generate(backend, list(seeds), category=plan.category, length=plan.length, options=plan.options,
                        progress=progress, cancel=cancel)
    if "sources" not in job.context:  # read once per job, even when its items span several batches
        job.context["sources"] = [load_source(path, job.facts) for path in plan.sources]
    sources = job.context["sources"]
    if plan.kind == "variation":
        return variation(backend, sources[0], list(seeds), strength=plan.strength, category=plan.category,
                         options=plan.options, progress=progress, cancel=cancel)
    return morph(backend, sources[0], sources[1], plan.frames, category=plan.category, steps=plan.options.steps,
                 band_limit=bool(plan.options.band_limit), progress=progress, cancel=cancel)


def recipe(job: Job, item: Item, index: int) -> dict[str, Any]:
    """Everything needed to render ``item`` again: stored in the WAV's INFO chunk and its sidecar."""
    plan, facts, options = job.plan, job.facts, job.plan.options
    doc: dict[str, Any] = {
        "model": facts.name, "model_hash": facts.model_hash, "backend": facts.runtime, "kind": plan.kind,
        "category": plan.category, "seed": item.seed, "sampler": options.sampler, "steps": options.steps,
        "schedule": options.schedule, "eta": options.eta, "guidance": options.guidance,
        "guidance_interval": list(options.guidance_interval), "sigma_max": options.sigma_max,
        "rho": options.rho, "tail_gate_db": options.tail_gate_db,
        **dict(zip(("low_cut_hz", "high_cut_hz"), applied_band(facts, plan.category, options.band_limit), strict=True)),
        "model_rate": facts.sample_rate, "job": job.id,
    }
    if plan.kind == "variation":
        doc.update(strength=plan.strength, sources=[str(p) for p in plan.sources])
    if plan.kind == "morph":
        doc.update(sampler="v-ddim", schedule="crash", eta=None, guidance=1.0, guidance_interval=[0.0, 1.0], seed=0,
                   sigma_max=None, rho=None, tail_gate_db=facts.tail_gate_db,
                   frame=index, frames=plan.frames,
                   sources=[str(p) for p in plan.sources])
    return doc


def write_item(folder: SampleFolder, job: Job, index: int) -> Path:
    """Write item ``index`` of ``job`` into the watched folder; OutputError subclasses on disk trouble."""
    item, plan, facts = job.items[index], job.plan, job.facts
    if plan.kind == "morph":
        if "series" not in job.context:  # one counter for every frame (a single writer thread calls this)
            job.context["series"] = folder.reserve_series(plan.category)
        return folder.write(item.audio, facts.sample_rate, category=plan.category, seed=0,
                            recipe=recipe(job, item, index), kind="morph", frame=index, series=job.context["series"])
    return folder.write(item.audio, facts.sample_rate, category=plan.category, seed=item.seed,
                        recipe=recipe(job, item, index), kind=plan.kind)

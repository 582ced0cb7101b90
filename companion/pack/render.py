"""Rendering one planned sound into the exact bytes of its WAV, the same wherever it runs.

Bit-identical output is a contract of packs, so this module fixes what can change samples:

- every sound is rendered **alone** (batch of one): both runtimes give results that differ in the last
  bits with the batch size and its neighbours (measured: up to 1.4e-6 on the default model);
- the runtime's **thread count** is part of the recipe (``[pack] threads``, default 1): a different count
  changes the reduction order (measured: 1.5e-6) though a fixed count repeats exactly;
- the WAV holds no time stamp or version: its INFO chunk carries only the recipe, so two runs of the
  same spec and model give the same file, byte for byte.

The :class:`Renderer` keeps the model resident; a Ray actor holds one (see :mod:`companion.pack.ray_run`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from companion.engine.model_files import load_backend
from companion.output import wavfile
from companion.pack.spec import PackSpec, Sound, SpecError
from models.backend import Backend
from models.config import ModelConfig
from models.errors import DDError
from models.generate import SamplingOptions, applied_band, generate


@dataclass(frozen=True)
class RenderSetup:
    """What a worker needs to load the model the way the pack's recipe says (picklable)."""

    model: str | None
    backend: str
    threads: int
    rate: int | None
    subtype: str

    @classmethod
    def of(cls, spec: PackSpec) -> RenderSetup:
        return cls(spec.model, spec.backend, spec.threads, spec.rate, spec.subtype)


def options_of(sound: Sound) -> SamplingOptions:
    """The spec's sampling keys of ``sound`` as unresolved options (None: the model's recommendation)."""
    s = dict(sound.sampling)
    interval = s.get("guidance_interval")
    return SamplingOptions(s.get("sampler"), s.get("steps"), s.get("schedule"), s.get("eta"), s.get("guidance"),
                           None if interval is None else tuple(interval), s.get("sigma_max"), s.get("rho"),
                           s.get("tail_gate_db"), s.get("band_limit"))


def check_against_model(spec: PackSpec, config: ModelConfig) -> None:
    """What only the model can tell: its categories, its shortest length, sampler/option combinations."""
    names = list(config.categories)
    for plan in spec.categories:
        where = f"categories.{plan.name}"
        line = spec.line_of(where)
        prefix = f"{spec.path.name} line {line}: [{where}]" if line else f"{spec.path.name}: [{where}]"
        if names and plan.name not in names:
            raise SpecError(f"{prefix}: model '{config.name}' has no category '{plan.name}'; its categories: "
                            f"{', '.join(names)}")
        if not names and plan.name != "sample":
            raise SpecError(f"{prefix}: model '{config.name}' is unconditional; name its one category 'sample'")
    checked: set[tuple] = set()
    for sound in spec.sounds:
        if sound.sampling in checked:
            continue
        checked.add(sound.sampling)
        where = f"categories.{sound.category}"
        line = spec.line_of(where)
        prefix = f"{spec.path.name} line {line}: [{where}]" if line else f"{spec.path.name}: [{where}]"
        try:
            options_of(sound).resolved(config)
            seconds = sound.option("seconds")
            if seconds is not None:
                config.length_for_seconds(float(seconds))
        except DDError as exc:
            raise SpecError(f"{prefix}: {exc}") from None


def runtime_version(backend: Backend) -> str:
    module = "onnxruntime" if backend.kind == "onnxruntime" else "torch"
    return f"{module} {__import__(module).__version__}"


class Renderer:
    """A resident model rendering planned sounds into WAV bytes."""

    def __init__(self, setup: RenderSetup, backend: Backend | None = None) -> None:
        self.setup = setup
        self.backend = backend or load_backend(setup.model, backend=setup.backend, threads=setup.threads)
        self.config: ModelConfig = self.backend.config

    @property
    def facts(self) -> dict[str, Any]:
        """The model and runtime settings every recipe of this pack records."""
        b = self.backend
        return {"model": self.config.name, "model_hash": b.model_hash, "backend": b.kind,
                "threads": self.setup.threads, "model_rate": self.config.sample_rate}

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The facts plus the runtime's version: what must match for a resumed or distributed pack to give
        the same bits (the version is not in the recipe, so a WAV's bytes do not change with it)."""
        return {**self.facts, "runtime": runtime_version(self.backend)}

    def recipe(self, sound: Sound) -> dict[str, Any]:
        """Everything that decides ``sound``'s samples, resolved (the spec's choices and the model's defaults)."""
        opts = options_of(sound).resolved(self.config)
        seconds = sound.option("seconds")
        low, high = applied_band(self.config, sound.category, opts.band_limit)
        return {
            **self.facts, "kind": "generate", "category": sound.category, "seed": sound.seed,
            "sampler": opts.sampler, "steps": opts.steps, "schedule": opts.schedule, "eta": opts.eta,
            "guidance": opts.guidance, "guidance_interval": list(opts.guidance_interval),
            "sigma_max": opts.sigma_max, "rho": opts.rho, "tail_gate_db": opts.tail_gate_db,
            "low_cut_hz": low, "high_cut_hz": high,
            "seconds": round(self.config.sample_size / self.config.sample_rate, 6) if seconds is None else seconds,
            "rate": self.setup.rate or self.config.sample_rate, "subtype": self.setup.subtype,
            "layer": sound.layer, "variation": sound.variation,
        }

    def render(self, sound: Sound) -> bytes:
        """The complete WAV file of ``sound``."""
        seconds = sound.option("seconds")
        length = None if seconds is None else self.config.length_for_seconds(float(seconds))
        audio = generate(self.backend, [sound.seed], category=None if not self.config.categories else sound.category,
                         length=length, options=options_of(sound))[0]
        rate = self.setup.rate or self.config.sample_rate
        if rate != self.config.sample_rate:
            audio = np.ascontiguousarray(soxr.resample(audio.T, self.config.sample_rate, rate, "VHQ").T)
        recipe = self.recipe(sound)
        info = {"INAM": sound.name.rsplit("/", 1)[-1].removesuffix(".wav"), "IGNR": sound.category,
                "ISFT": "dd-companion pack",
                "ICMT": json.dumps(recipe, separators=(",", ":"), sort_keys=True, allow_nan=False)}
        return wavfile.encode_wav(audio, rate, subtype=self.setup.subtype, info=info,
                                         acid=wavfile.AcidInfo(one_shot=True))

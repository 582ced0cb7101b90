"""Checking a request against the loaded model and the live parameters: a request becomes a plan or an error.

Runs in the caller's thread (OSC, MIDI, GUI), so a bad request is refused before it reaches the
worker; the worker only meets what the model itself refuses (after a switch, for instance).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soundfile as sf

from companion.config.settings import PARAM_KEYS, Params, SettingsError, check_setting
from companion.engine.requests import (
    MAX_COUNT,
    MAX_FRAMES,
    GenerateRequest,
    LoadModelRequest,
    ModelFacts,
    MorphRequest,
    NotFoundError,
    OutOfRangeError,
    Plan,
    Priority,
    RefillRequest,
    Request,
    RequestRejected,
    VariationRequest,
)
from companion.output.folder import category_slug
from companion.output.wavfile import WavError, read_recipe
from models.audio_io import AudioFileError
from models.config import check_guidance
from models.errors import ConfigError, DDError, LengthError
from models.generate import SamplingOptions, check_seed, random_seed
from models.registry import resolve_model

_RESULT_REF = re.compile(r"^job:(\d+)(?::(\d+))?$")
ResultLookup = Callable[[int, int], Path]


def prepare(request: Request, model: ModelFacts | None, params: Params, results: ResultLookup) -> Plan:
    """Check ``request`` and resolve its defaults; raise a :class:`RequestRejected` (or an audio error)."""
    if isinstance(request, LoadModelRequest):
        return _prepare_load(request)
    if model is None:
        raise NotFoundError("no model is loaded yet; load one with /dd/model/load or --model")
    if isinstance(request, GenerateRequest | RefillRequest):
        generate = isinstance(request, GenerateRequest)
        count = _count(request.count, "count")
        seed = request.seed if generate else None
        seeds, random = _seeds(seed, count, params)
        options = _options(request.sampler if generate else None, request.steps if generate else None, params, model,
                           request.guidance if generate else None)
        seconds = request.seconds if generate and request.seconds is not None else params.seconds
        return Plan("generate" if generate else "refill", Priority.LIVE if generate else Priority.BACKGROUND,
                    category=_category(model, request.category), seeds=seeds, options=options,
                    length=_length(model, seconds), random_seeds=random or not generate,
                    fresh=generate and request.fresh)
    if isinstance(request, VariationRequest):
        source = _source(request.source, results)
        strength = params.strength if request.strength is None else request.strength
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 < strength <= 1.0:
            raise OutOfRangeError(f"strength must be in (0, 1], got {strength!r}")
        seeds, random = _seeds(request.seed, _count(request.count, "count"), params)
        return Plan("variation", Priority.LIVE, category=_source_category(model, request.category, source),
                    seeds=seeds, options=_options(request.sampler, request.steps, params, model, request.guidance),
                    sources=(source,), strength=float(strength), random_seeds=random)
    if isinstance(request, MorphRequest):
        frames = request.frames
        if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
            raise OutOfRangeError(f"frames must be an integer in 2..{MAX_FRAMES}, got {frames!r}")
        a, b = _source(request.source_a, results), _source(request.source_b, results)
        options = _options(None, request.steps, params, model, 1.0)  # unguided: the inversion must be exact
        if options.steps < 2:
            raise OutOfRangeError(f"a morph needs steps in 2..1000, got {options.steps}")
        return Plan("morph", Priority.LIVE, category=_source_category(model, request.category, a),
                    options=options, sources=(a, b), frames=frames)
    raise RequestRejected(f"unknown request type {type(request).__name__}")


def _prepare_load(request: LoadModelRequest) -> Plan:
    if request.model is not None and (not isinstance(request.model, str | Path) or not str(request.model)):
        raise NotFoundError(f"model must be a name or a path, got {request.model!r}")
    try:
        path = resolve_model(request.model)
    except DDError as exc:
        raise NotFoundError(str(exc)) from None
    return Plan("load", Priority.LIVE, model=str(path),
                load_options={"backend": request.backend, "device": request.device, "precision": request.precision})


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise OutOfRangeError(f"{what} must be an integer in 1..{MAX_COUNT}, got {value!r}")
    return value


def _seeds(seed: int | None, count: int, params: Params) -> tuple[tuple[int, ...], bool]:
    """Item seeds, and whether they were drawn at random."""
    if seed is None or seed == -1:
        seed = None if params.seed == -1 else params.seed
    if seed is None:
        return tuple(random_seed() for _ in range(count)), True
    try:
        first = check_seed(seed)
    except ConfigError as exc:
        raise OutOfRangeError(str(exc)) from None
    return tuple((first + k) % (2**31) for k in range(count)), False


def _options(sampler: str | None, steps: int | None, params: Params, facts: ModelFacts | None,
             guidance: float | None = None) -> SamplingOptions:
    """The request's sampling, else the live parameters', else the model's recommendation (guidance too)."""
    steps = params.steps if steps is None else steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000):
        raise OutOfRangeError(f"steps must be an integer in 1..1000, got {steps!r}")
    if guidance is None and (facts is None or facts.categories):  # an unconditional model has nothing to guide
        guidance = params.guidance
    if guidance is not None:
        try:  # the range alone here, as out_of_range; whether the model can be guided is resolved() below
            check_guidance(guidance, has_categories=True)
        except ConfigError as exc:
            raise OutOfRangeError(str(exc)) from None
    try:
        return SamplingOptions(sampler or params.sampler, steps, guidance=guidance,
                               tail_gate_db=params.tail_gate,
                               band_limit=None if params.band_limit is None else bool(params.band_limit)).resolved(facts)
    except ConfigError as exc:
        raise RequestRejected(str(exc)) from None


def _category(model: ModelFacts, category: str | None) -> str | None:
    """The model's own spelling of ``category``; None for unconditional models."""
    if not model.categories:
        if category not in (None, "", "sample"):
            raise NotFoundError(f"category '{category}' not found: model '{model.name}' is unconditional "
                                "(it has no categories; leave the category out)")
        return None
    if not category:
        raise NotFoundError(f"model '{model.name}' needs a category: one of {', '.join(model.categories)}")
    wanted = category_slug(category) if _sluggable(category) else category.lower()
    for name in model.categories:
        if name.lower() == category.lower() or category_slug(name) == wanted:
            return name
    raise NotFoundError(f"category '{category}' not found; model '{model.name}' has: {', '.join(model.categories)}")


def _sluggable(text: str) -> bool:
    try:
        category_slug(text)
    except DDError:
        return False
    return True


def _length(model: ModelFacts, seconds: float | None) -> int:
    if seconds is None:
        return model.sample_size
    try:
        return model.length_for_seconds(float(seconds))
    except (LengthError, TypeError, ValueError) as exc:
        raise OutOfRangeError(str(exc)) from None


def _source(source: str | Path, results: ResultLookup) -> Path:
    """An existing, readable audio file: a path, or an earlier result named ``job:<id>[:<item>]``."""
    match = _RESULT_REF.match(str(source)) if isinstance(source, str) else None
    if match:
        path = results(int(match.group(1)), int(match.group(2) or 0))
    else:
        if not str(source):
            raise NotFoundError("the source must be a file path or job:<id>, got an empty string")
        path = Path(source).expanduser()
    if not path.is_file():
        raise NotFoundError(f"source file '{path}' does not exist")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"cannot read '{path.name}' as audio: {exc}") from None
    if info.frames <= 0:
        raise AudioFileError(f"audio file '{path.name}' holds no samples")
    return path.absolute()


def _source_category(model: ModelFacts, category: str | None, source: Path) -> str | None:
    """The requested category; else the one the companion recorded in the source; else a category
    named in the source's file or folder name (``kick 01.wav``, ``Kicks/x.wav``), if the model has it."""
    if category or not model.categories:
        return _category(model, category)
    try:
        recorded = (read_recipe(source) or {}).get("category")
    except (WavError, OSError):
        recorded = None
    if isinstance(recorded, str):
        for name in model.categories:
            if category_slug(name) == recorded:
                return name
    words = re.split(r"[^a-z0-9]+", f"{source.parent.name} {source.stem}".lower())
    for name in model.categories:
        slug = category_slug(name) if _sluggable(name) else name.lower()
        if slug in words or f"{slug}s" in words or slug.replace("_", "") in words:
            return name
    raise NotFoundError(f"'{source.name}' records no category of model '{model.name}' and names none; "
                        f"pass one of: {', '.join(model.categories)}")


def check_param(name: str, value: Any, model: ModelFacts | None) -> Any:
    """``value`` checked for live parameter ``name`` (as in the settings file, and against the model)."""
    if name not in PARAM_KEYS:
        raise SettingsError(f"unknown setting {name!r}; settings are: {', '.join(PARAM_KEYS)}", "unknown_param")
    value = check_setting(name, value)
    if name == "seconds" and model is not None:
        try:
            model.length_for_seconds(value)
        except DDError as exc:
            raise SettingsError(str(exc), "out_of_range") from None
    if name == "guidance" and value not in (None, 1.0) and model is not None and not model.categories:
        raise SettingsError(f"guidance {value:g} needs a model with categories; model '{model.name}' is "
                            "unconditional (it renders unguided: use 1)", "bad_config")
    return value


def param_value(params: Params, name: str, model: ModelFacts | None, batch_size: int) -> int | float | str:
    """A live parameter as it takes effect: the sampler's steps, the model's seconds, guidance (always 1 for
    an unconditional model), tail gate and band limits, the auto batch size."""
    if name not in PARAM_KEYS:
        raise SettingsError(f"unknown setting {name!r}; settings are: {', '.join(PARAM_KEYS)}", "unknown_param")
    if name in ("steps", "sampler") and (params.steps is None or params.sampler is None):
        return getattr(SamplingOptions(params.sampler, params.steps).resolved(model), name)
    if name == "guidance" and (params.guidance is None or (model is not None and not model.categories)):
        return model.guidance if model else 1.0
    if name == "tail_gate" and params.tail_gate is None:
        return model.tail_gate_db if model else 0.0
    if name == "band_limit" and params.band_limit is None:
        return int(model is not None and any(model.low_cut_hz + model.high_cut_hz))
    if name == "seconds" and params.seconds is None:
        return round(model.seconds, 6) if model else 0.0
    if name == "batch_size":
        return batch_size
    return getattr(params, name)

"""``dd-companion generate``: new sounds, variations or a morph, written as tagged WAVs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from companion.engine.model_files import load_backend
from companion.output.folder import SampleFolder
from models.audio_io import load_audio
from models.backend import BACKENDS
from models.errors import ConfigError
from models.generate import SamplingOptions, applied_band, check_seed, generate, morph, random_seed, variation
from models.samplers import DEFAULT_SAMPLER, SAMPLERS
from models.schedules import SCHEDULES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate samples into a folder",
                       description="Generate new sounds (or variations of a file, or a morph between two files).")
    add_model_arguments(p)
    p.add_argument("--category", "-c", help="category to generate (see 'dd-companion models')")
    p.add_argument("--count", "-n", type=int, default=4, help="how many sounds (default 4)")
    p.add_argument("--seed", "-s", type=int, help="seed of the first sound; the others use seed+1, seed+2… "
                   "(default: random)")
    add_sampling_arguments(p)
    p.add_argument("--seconds", type=float, help="length in seconds (default: the model's own window)")
    p.add_argument("--rate", type=int, help="output sample rate, resampled with soxr (default: the model's)")
    p.add_argument("--format", choices=("pcm24", "float"), default="pcm24", help="WAV sample format")
    p.add_argument("--out", "-o", type=Path, default=Path("samples"), help="output folder (default ./samples)")
    p.add_argument("--from", dest="source", type=Path, help="make variations of this audio file")
    p.add_argument("--strength", type=float, default=0.5,
                   help="variation strength in (0, 1]: how far from the source (default 0.5)")
    p.add_argument("--morph", nargs=2, type=Path, metavar=("A", "B"), help="morph from file A to file B")
    p.add_argument("--frames", type=int, default=8, help="number of morph frames (default 8)")
    p.add_argument("--batch", type=int, default=1, help="items per network call (default 1; batching helps on GPUs)")
    p.set_defaults(run=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", help="model path or name (default: the shipped default model)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="runtime (default auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="torch precision (default: fp16 on GPUs, fp32 on the CPU)")
    p.add_argument("--model-rate", type=int, help="sample rate of a Harmonai .ckpt not in the known table")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=sorted(SAMPLERS),
                   help=f"sampler (default: the model's recommended one, else {DEFAULT_SAMPLER})")
    p.add_argument("--steps", type=int, help="sampler steps (default: the sampler's own)")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), help="noise schedule (default: the sampler's own)")
    p.add_argument("--eta", type=float, help="noise amount for v-ddim / dpmpp-2m-sde")
    p.add_argument("--sigma-max", type=float, metavar="S",
                   help="highest noise level sigma_k of the karras schedule (default: the model's "
                        "recommendation, else 200)")
    p.add_argument("--rho", type=float, help="spacing of the karras schedule: higher spends more steps at low "
                   "noise (default: the model's recommendation, else 7)")
    p.add_argument("--tail-gate", type=float, metavar="DB", dest="tail_gate_db",
                   help="push whatever lies more than DB (-120..-10) under the sound's loudest 10 ms further down, "
                        "removing a model's hiss and rumble floor from the tails; 0 = off (default: the model's "
                        "recommendation)")
    p.add_argument("--no-band-limit", dest="band_limit", action="store_const", const=False, default=None,
                   help="leave out the model's band limits (a high-pass and a low-pass where the category's training "
                        "sounds have almost nothing, taking the network's rumble and hiss out)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance scale, 1 = none (default: the model's recommendation); "
                        "higher is more typical of the category, less varied")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="diffusion times t' (0..1) where guidance applies (default: the model's); outside them a "
                        "step costs one plain call")


def run(args: argparse.Namespace) -> int:
    if args.count < 1 or args.count > 1000:
        raise ConfigError(f"count must be in 1..1000, got {args.count}")
    if args.batch < 1:
        raise ConfigError(f"batch must be at least 1, got {args.batch}")
    if args.source and args.morph:
        raise ConfigError("choose either --from (variations) or --morph, not both")
    backend = load_backend(args.model, backend=args.backend, device=args.device, precision=args.precision,
                           sample_rate=args.model_rate)
    config = backend.config
    if not config.categories and args.category not in (None, "sample"):
        raise ConfigError(f"model '{config.name}' is unconditional; drop --category")
    if config.categories and args.category is None:
        raise ConfigError(f"model '{config.name}' needs --category: one of {list(config.categories)}")
    if config.categories:
        config.category_index(args.category)
    folder = SampleFolder(args.out, rate=args.rate, subtype="FLOAT" if args.format == "float" else "PCM_24")
    folder.cleanup_stale_temporaries()
    options = SamplingOptions(args.sampler, args.steps, args.schedule, args.eta, args.guidance,
                              None if args.guidance_interval is None else tuple(args.guidance_interval),
                              args.sigma_max, args.rho, args.tail_gate_db, args.band_limit).resolved(config)
    length = None if args.seconds is None else config.length_for_seconds(args.seconds)
    recipe_base: dict[str, Any] = {
        "model": config.name, "model_hash": backend.model_hash, "backend": backend.kind,
        "sampler": options.sampler, "steps": options.steps, "schedule": options.schedule,
        "eta": options.eta, "guidance": options.guidance,
        "guidance_interval": list(options.guidance_interval), "sigma_max": options.sigma_max,
        "rho": options.rho, "tail_gate_db": options.tail_gate_db, "category": args.category,
        **dict(zip(("low_cut_hz", "high_cut_hz"), applied_band(config, args.category, options.band_limit), strict=True)),
        "model_rate": config.sample_rate,
    }
    low, high = options.guidance_interval
    guided = "" if options.guidance == 1.0 else f", guidance {options.guidance:g}" + (
        f" for t in [{low:g}, {high:g}]" if (low, high) != (0.0, 1.0) else "")
    print(f"model {config.name} on {backend.kind}/{backend.device}, {options.sampler} x {options.steps} steps{guided}")
    if args.morph:
        paths = _run_morph(args, backend, folder, recipe_base)
    else:
        paths = _run_generate(args, backend, folder, options, length, recipe_base)
    for path in paths:
        print(path)
    print(f"{len(paths)} file(s) in {folder.root}")
    return 0


def _run_generate(args: argparse.Namespace, backend: Any, folder: SampleFolder, options: SamplingOptions,
                  length: int | None, recipe_base: dict[str, Any]) -> list[Path]:
    config = backend.config
    first = random_seed() if args.seed is None else check_seed(args.seed)
    seeds = [(first + i) % (2**31) for i in range(args.count)]
    source = None
    if args.source:
        source = load_audio(args.source, config.sample_rate, config.channels)
        if length is not None:
            source = source[:, :length]
    kind = "variation" if source is not None else "generate"
    steps_per_item = options.steps if source is None else max(1, int(np.ceil(options.steps * args.strength)))
    bar = tqdm(total=len(seeds) * steps_per_item, unit="step", desc=kind, leave=False)
    paths = []
    for start in range(0, len(seeds), args.batch):
        chunk = seeds[start:start + args.batch]
        tick = lambda i, n: bar.update(1)  # noqa: E731
        if source is None:
            audio = generate(backend, chunk, category=args.category, length=length, options=options, progress=tick)
        else:
            audio = variation(backend, source, chunk, strength=args.strength, category=args.category,
                              options=options, progress=tick)
        for seed, item in zip(chunk, audio, strict=True):
            recipe = dict(recipe_base, seed=seed, kind=kind)
            if source is not None:
                recipe.update(strength=args.strength, sources=[str(args.source.resolve())])
            paths.append(folder.write(item, config.sample_rate, category=args.category, seed=seed,
                                      recipe=recipe, kind=kind))
    bar.close()
    return paths


def _run_morph(args: argparse.Namespace, backend: Any, folder: SampleFolder, recipe_base: dict[str, Any]) -> list[Path]:
    config = backend.config
    a, b = (load_audio(p, config.sample_rate, config.channels) for p in args.morph)
    steps = args.steps or 50
    bar = tqdm(total=2 * steps, unit="step", desc="morph", leave=False)
    # the morph gets the tail gate and band limits the recipe records (the user's, else the model's)
    frames = morph(backend, a, b, args.frames, category=args.category, steps=steps, band_limit=args.band_limit is not False,
                   tail_gate_db=recipe_base["tail_gate_db"], progress=lambda i, n: bar.update(1))
    bar.close()
    series = folder.reserve_series(args.category)
    sources = [str(p.resolve()) for p in args.morph]
    paths = []
    for k, item in enumerate(frames):
        recipe = dict(recipe_base, kind="morph", sampler="v-ddim", steps=steps, schedule="crash", eta=None,
                      guidance=1.0, guidance_interval=[0.0, 1.0], sigma_max=None, rho=None,  # as the morph ran
                      sources=sources, frame=k, frames=args.frames, seed=0)
        paths.append(folder.write(item, config.sample_rate, category=args.category, seed=0, recipe=recipe,
                                  kind="morph", frame=k, series=series))
    return paths

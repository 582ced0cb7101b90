"""Quality of a category model against the synthesizer it was trained on.

    python benchmarks/quality.py                       # the shipped default model, 12 samples per category
    python benchmarks/quality.py --model runs/x.safetensors --per-category 20 --sampler dpmpp-2m --steps 20

Reports, side by side in one run:
1. category accuracy: a classifier trained on held-out synthesized sounds (seeds the model never saw)
   labels the generated sounds; per category and overall;
2. Fréchet distance on the fixed log-mel embedding of models/features.py between generated and real
   sounds, next to the distance between two disjoint real sets (the floor) and between real sounds and
   noise-like sounds (a ceiling);
3. diversity: mean pairwise embedding distance among generated sounds of a category vs among real ones;
4. the low end: each category's energy below 150 Hz, generated vs real (a diagnostic, no target);
5. wall time per sample.
Targets (issue 3): accuracy >= 90%, Fréchet <= 3x the floor, diversity >= 50% of the real one.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from companion.engine.model_files import load_backend  # noqa: E402
from models import features, synth  # noqa: E402
from models.generate import SamplingOptions, generate  # noqa: E402

# seeds far from the training stream (the trainer's synth source uses seed 0, indices 0..)
HELD_OUT_SEED, CLASSIFIER_SEED, FLOOR_SEED = 9_001, 9_002, 9_003


def real_set(seed: int, per_category: int, categories: list[str], length: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    audio, labels = [], []
    for c, name in enumerate(categories):
        for j in range(per_category):
            rng = np.random.default_rng([seed, c, j])
            audio.append(synth.synthesize(name, rng, length, rate))
            labels.append(c)
    return np.stack(audio), np.array(labels)


def noise_like(n: int, length: int, rate: int, seed: int) -> np.ndarray:
    """Decaying noise bursts of random colour: a ceiling for 'sounds that are not one-shots of any kind'."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    out = []
    for _ in range(n):
        white = rng.standard_normal((2, length))
        tilt = np.cumsum(white, axis=1) * rng.uniform(0, 0.05) + white
        out.append(0.3 * tilt / np.abs(tilt).max() * np.exp(-t / rng.uniform(0.05, 0.6)))
    return np.stack(out).astype(np.float32)


LOW_BAND_HZ = 150.0


def low_band_db(audio: np.ndarray, rate: int) -> np.ndarray:
    """Energy below LOW_BAND_HZ as a share of the whole sound's, in dB, per sound ``[n, channels, samples]``."""
    power = np.abs(np.fft.rfft(audio.astype(np.float64).mean(axis=1), axis=-1)) ** 2
    low = power[:, np.fft.rfftfreq(audio.shape[-1], 1.0 / rate) < LOW_BAND_HZ].sum(axis=1)
    return 10.0 * np.log10(low / np.maximum(power.sum(axis=1), 1e-30) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path or name (default: the shipped model)")
    parser.add_argument("--per-category", type=int, default=12)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--schedule", default=None, help="noise schedule (default: the sampler's)")
    parser.add_argument("--sigma-max", type=float, default=None, help="karras schedule's highest noise level "
                        "(default: the model's)")
    parser.add_argument("--rho", type=float, default=None, help="karras schedule's spacing (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    parser.add_argument("--tail-gate", type=float, default=None, dest="tail_gate_db",
                        help="tail gate threshold in dB, 0 = off (default: the model's)")
    parser.add_argument("--no-band-limit", dest="band_limit", action="store_const", const=False, default=None,
                        help="leave out the model's per-category band limits (low and high cut)")
    parser.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", type=int, default=1, help="sounds per generate() call (wall time is per sound)")
    args = parser.parse_args()

    backend = load_backend(args.model, backend=args.backend)
    config = backend.config
    categories = list(config.categories)
    if not categories:
        raise SystemExit("this benchmark needs a category-conditioned model")
    unknown = [c for c in categories if c not in synth.CATEGORIES]
    if unknown:
        raise SystemExit(f"categories {unknown} are not synthesizer categories; this benchmark compares to the synth")
    length, rate, n = config.sample_size, config.sample_rate, args.per_category
    interval = None if args.guidance_interval is None else tuple(args.guidance_interval)
    options = SamplingOptions(args.sampler, args.steps, args.schedule, guidance=args.guidance,
                              guidance_interval=interval, sigma_max=args.sigma_max, rho=args.rho,
                              tail_gate_db=args.tail_gate_db, band_limit=args.band_limit)
    options = options.resolved(config)
    print(f"model {config.name} ({backend.kind}/{backend.device}), {options.sampler} x {options.steps} steps "
          f"({options.schedule} schedule, sigma_max {options.sigma_max:g}, rho {options.rho:g}), "
          f"guidance {options.guidance:g} in {options.guidance_interval}, tail gate {options.tail_gate_db:g} dB, band limits {'on' if options.band_limit and any(config.low_cut_hz + config.high_cut_hz) else 'off'}, {n} per category, {length} samples at {rate} Hz, batch {args.batch}")

    gen_audio, gen_labels, times = [], [], []
    for c, name in enumerate(categories):
        for j in range(0, n, args.batch):
            seeds = [1000 * c + k for k in range(j, min(n, j + args.batch))]
            start = time.perf_counter()
            gen_audio.extend(generate(backend, seeds, category=name, options=options))
            times.extend([(time.perf_counter() - start) / len(seeds)] * len(seeds))
            gen_labels.extend([c] * len(seeds))
    gen_audio = np.stack(gen_audio)
    gen = features.embed(gen_audio, rate)
    gen_labels = np.array(gen_labels)

    train_audio, train_labels = real_set(CLASSIFIER_SEED, max(30, n), categories, length, rate)
    real_audio, real_labels = real_set(HELD_OUT_SEED, n, categories, length, rate)
    floor_audio, _ = real_set(FLOOR_SEED, n, categories, length, rate)
    clf = features.LogisticClassifier().fit(features.embed(train_audio, rate), train_labels)
    real = features.embed(real_audio, rate)
    floor = features.embed(floor_audio, rate)
    noise = features.embed(noise_like(len(real), length, rate, 7), rate)

    predicted = clf.predict(gen)
    print("\n1. category accuracy (classifier trained on held-out synthesized sounds)")
    print(f"   {'category':<12} generated   real (classifier sanity)   generated ones taken for")
    real_pred = clf.predict(real)
    for c, name in enumerate(categories):
        mask = gen_labels == c
        wrong = collections.Counter(categories[p] for p in predicted[mask] if p != c).most_common(3)
        taken = ", ".join(f"{other} {count}" for other, count in wrong) or "-"
        print(f"   {name:<12} {np.mean(predicted[mask] == c):9.0%}   {np.mean(real_pred[real_labels == c] == c):6.0%}"
              f"{'':26}{taken}")
    print(f"   {'overall':<12} {np.mean(predicted == gen_labels):9.0%}   {np.mean(real_pred == real_labels):6.0%}"
          "   (target >= 90%)")

    fd_gen = features.frechet_distance(gen, real)
    fd_floor = features.frechet_distance(floor, real)
    fd_noise = features.frechet_distance(noise, real)
    print("\n2. Fréchet distance on the log-mel embedding")
    print(f"   generated vs real     {fd_gen:10.1f}   ({fd_gen / fd_floor:.1f}x the floor; target <= 3x)")
    print(f"   real vs real (floor)  {fd_floor:10.1f}")
    print(f"   noise vs real (ceil.) {fd_noise:10.1f}")

    print("\n3. diversity (mean pairwise embedding distance within a category)")
    ratios = []
    for c, name in enumerate(categories):
        g = features.mean_pairwise_distance(gen[gen_labels == c])
        r = features.mean_pairwise_distance(real[real_labels == c])
        ratios.append(g / r)
        print(f"   {name:<12} generated {g:7.2f}   real {r:7.2f}   ratio {g / r:5.0%}")
    print(f"   median ratio {statistics.median(ratios):.0%} (target >= 50%)")

    print(f"\n4. low end: energy below {LOW_BAND_HZ:g} Hz as a share of the sound's, median dB (a rumble under "
          "sounds that have none shows here first)")
    gen_low, real_low = low_band_db(gen_audio, rate), low_band_db(real_audio, rate)
    for c, name in enumerate(categories):
        g, r = np.median(gen_low[gen_labels == c]), np.median(real_low[real_labels == c])
        print(f"   {name:<12} generated {g:7.1f}   real {r:7.1f}   excess {g - r:+6.1f} dB")

    per_second = statistics.median(times) / (length / rate)
    print(f"\n5. wall time: median {statistics.median(times):.3f} s per sample "
          f"({per_second:.3f} s per second of audio)")


if __name__ == "__main__":
    main()

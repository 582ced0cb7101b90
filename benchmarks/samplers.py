"""How many steps does each sampler need? Error against a converged reference, per sampler and step count.

    .venv/bin/python benchmarks/samplers.py                       # analytic tonal Gaussian model, no network
    .venv/bin/python benchmarks/samplers.py --analytic bimodal    # a non-linear analytic denoiser
    .venv/bin/python benchmarks/samplers.py --schedules all       # every sampler on every schedule
    .venv/bin/python benchmarks/samplers.py --model PATH --length 65536 --batch 2 --steps 10,25,50,100

Deterministic samplers: RMS distance to the reference from the same start noise. The reference is the exact
probability-flow solution for the Gaussian model; otherwise 500 steps of DPM-Solver++(2M) on the karras
schedule (the distance to 500 crash-schedule steps is printed as its floor).
Stochastic samplers land elsewhere by design, so they get a distribution error instead: the RMS difference,
in dB, between the band-averaged power spectrum of their outputs and the reference's, less the part that
finite sampling explains (the same measure between two independent exact batches, subtracted in quadrature).
The summary gives, per sampler, the fewest steps whose error is at most that of 100 v-iplms steps on the
crash schedule (the notebook's and diffusers' default).

Analytic models (both act on each orthonormal Fourier component independently, zero mean like audio):
- ``tonal``: a stationary Gaussian process whose spectrum has harmonic peaks over a falling noise floor, so
  component scales span 6e-4 to 9 as in a synth one-shot. Its exact v-denoiser is a linear filter, so this
  is the elementwise Gaussian case of the tests, spread over the scales a real clip has.
- ``bimodal``: the same scales, but each component is a two-Gaussian mixture (+-0.95 a, std 0.31 a). The
  denoiser is non-linear (a soft sign), a harsher test of multistep extrapolation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.samplers import SAMPLERS, Denoiser  # noqa: E402
from models.schedules import SCHEDULES, alpha_sigma, make_schedule  # noqa: E402

BASELINE = ("v-iplms", "crash", 100)
REFERENCE = ("dpmpp-2m", "karras")
BIMODAL_MEAN, BIMODAL_STD = 0.95, float(np.sqrt(1 - 0.95**2))  # unit variance per component


# --- the analytic models ------------------------------------------------------------------------------


def audio_like_psd(
    length: int, f0_bin: float = 40.0, harmonics: int = 12, amplitude: float = 0.3
) -> np.ndarray:
    """Per-bin variance of an orthonormal rfft: harmonics of ``f0_bin`` (amplitude ``amplitude / h``) over a
    brown-ish noise floor near -30 dBFS. A sinusoid of amplitude A puts length * A^2 / 4 into its bin."""
    k = np.arange(length // 2 + 1, dtype=np.float64)
    psd = 1e-3 / (1.0 + (k / 64.0) ** 2) + 1e-7
    for h in range(1, harmonics + 1):
        peak = length * (amplitude / h) ** 2 / 4
        psd += peak * np.exp(-0.5 * (k - h * f0_bin) ** 2) / 2.5  # a peak about 2.5 bins wide
    return psd


def _component_scale(psd: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    # Real and imaginary parts of an orthonormal rfft of white noise have variance 1/2, except DC and
    # Nyquist (real, variance 1). Dividing by the noise std makes each part a unit-noise component.
    noise_std = np.full(psd.shape, np.sqrt(0.5))
    noise_std[0] = 1.0
    if length % 2 == 0:
        noise_std[-1] = 1.0
    return noise_std, np.sqrt(psd)


def fourier_denoiser(psd: np.ndarray, length: int, bimodal: bool) -> Denoiser:
    """Exact v-prediction when each Fourier component has scale sqrt(psd): Gaussian, or a +-mean mixture."""
    noise_std, scale = _component_scale(psd, length)

    def posterior(y: np.ndarray, alpha: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not bimodal:
            var = alpha**2 * scale**2 + sigma**2
            return alpha * scale**2 * y / var, sigma * y / var
        mean, std = BIMODAL_MEAN * scale, BIMODAL_STD * scale
        var = alpha**2 * std**2 + sigma**2
        r_plus = 0.5 * (1 + np.tanh(alpha * mean * y / var))  # responsibility of the +mean component
        centred = y - alpha * mean * (2 * r_plus - 1)  # sum over components of r_j (y - alpha m_j)
        x0 = mean * (2 * r_plus - 1) + alpha * std**2 * centred / var
        return x0, sigma * centred / var

    def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        alpha, sigma = alpha_sigma(np.asarray(t, dtype=np.float64).reshape(-1, 1, 1))
        spec = np.fft.rfft(np.asarray(x, dtype=np.float64), norm="ortho") / noise_std
        x0_re, eps_re = posterior(spec.real, alpha, sigma)
        x0_im, eps_im = posterior(spec.imag, alpha, sigma)
        x0 = np.fft.irfft((x0_re + 1j * x0_im) * noise_std, n=length, norm="ortho")
        eps = np.fft.irfft((eps_re + 1j * eps_im) * noise_std, n=length, norm="ortho")
        return (alpha * eps - sigma * x0).astype(np.float32)

    return denoise


def gaussian_flow_x0(noise: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Exact probability-flow solution at t'=0 from pure noise at t'=1 for the Gaussian model."""
    return np.fft.irfft(np.sqrt(psd) * np.fft.rfft(noise, norm="ortho"), n=noise.shape[-1], norm="ortho")


def exact_samples(
    rng: np.random.Generator, shape: tuple[int, ...], psd: np.ndarray, bimodal: bool
) -> np.ndarray:
    """Independent draws from the analytic data distribution (for the sampling floor of the spectrum)."""
    noise_std, scale = _component_scale(psd, shape[-1])

    def part() -> np.ndarray:
        z = rng.standard_normal(shape[:-1] + psd.shape)
        if bimodal:
            z = BIMODAL_MEAN * rng.choice([-1.0, 1.0], size=z.shape) + BIMODAL_STD * z
        return z * scale

    return np.fft.irfft((part() + 1j * part()) * noise_std, n=shape[-1], norm="ortho")


# --- error measures -----------------------------------------------------------------------------------


def band_edges(length: int, n_bands: int = 24, min_width: int = 4) -> list[tuple[int, int]]:
    """Log-spaced rfft bin bands from bin 1 to Nyquist, each at least ``min_width`` bins wide."""
    top = length // 2 + 1
    edges, start = [], 1
    for stop in np.unique(np.geomspace(1, top, n_bands + 1).astype(int))[1:]:
        if stop - start >= min_width:
            edges.append((start, int(stop)))
            start = int(stop)
    if start < top:
        edges.append((start, top))
    return edges


def band_power_db(x: np.ndarray, edges: list[tuple[int, int]]) -> np.ndarray:
    """Power in each band (dB), averaged over items and channels."""
    power = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64), norm="ortho")) ** 2
    power = power.reshape(-1, power.shape[-1]).mean(axis=0)
    return np.array([10 * np.log10(power[a:b].mean() + 1e-30) for a, b in edges])


def rms(a: np.ndarray, b: np.ndarray | float = 0.0) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


# --- running ------------------------------------------------------------------------------------------


def start_noise(seed: int, batch: int, channels: int, length: int) -> tuple[np.ndarray, list]:
    rngs = [np.random.default_rng([seed, item]) for item in range(batch)]
    return np.stack([rng.standard_normal((channels, length)) for rng in rngs]), rngs


def make_runner(denoise: Denoiser, noise: np.ndarray, seed: int) -> Callable[[str, str, int], tuple]:
    def run(name: str, schedule: str, steps: int) -> tuple[np.ndarray, float]:
        _, rngs = start_noise(seed + 1, noise.shape[0], 1, 1)  # the sampler's own per-item generators
        start = time.perf_counter()
        out = SAMPLERS[name].fn(denoise, noise, make_schedule(schedule, steps), rngs)
        return out, time.perf_counter() - start

    return run


def load_model(args: argparse.Namespace) -> tuple[Denoiser, int, int, np.ndarray | None, str]:
    """(denoiser, channels, length, psd or None, description): the model's, else an analytic one."""
    if args.model:
        try:
            from companion.engine.model_files import load_backend
        except ImportError as exc:
            print(f"note: the model loader is not available ({exc}); using the analytic {args.analytic} model")
        else:
            backend = load_backend(args.model)
            config = backend.config
            length = args.length or config.sample_size
            labels, what = None, f"model {args.model}"
            if config.categories:  # a conditional model: one category for the whole batch
                category = args.category or config.categories[0]
                labels, what = (
                    np.array(config.category_index(category), dtype=np.int64),
                    f"{what} [{category}]",
                )
            return backend.denoiser(labels), config.channels, length, None, what
    length = args.length or 8192
    psd = audio_like_psd(length)
    what = f"analytic {args.analytic} model (audio-like spectrum, component scales {np.sqrt(psd.min()):.0e}"
    what += f"..{np.sqrt(psd.max()):.1f})"
    return fourier_denoiser(psd, length, args.analytic == "bimodal"), 2, length, psd, what


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        help="model to load through companion.engine.model_files: a path, a name or 'default' "
        "(without it: an analytic model)",
    )
    parser.add_argument(
        "--category", default="", help="category for a conditional model (default: its first)"
    )
    parser.add_argument("--analytic", choices=("tonal", "bimodal"), default="tonal")
    parser.add_argument("--steps", default="5,10,15,20,30,50,75,100", help="comma-separated step counts")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated sampler names")
    parser.add_argument("--schedules", default="default", help="'default', 'all' or comma-separated names")
    parser.add_argument("--ref-steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=0, help="samples per clip (default: model's, or 8192)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    step_counts = [int(s) for s in args.steps.split(",")]
    names = args.samplers.split(",")
    denoise, channels, length, psd, what = load_model(args)
    noise, _ = start_noise(args.seed, args.batch, channels, length)
    run = make_runner(denoise, noise, args.seed)
    edges = band_edges(length)
    print(f"denoiser: {what}; batch {args.batch} x {channels} x {length}")

    exact = psd is not None and args.analytic == "tonal"
    if exact:
        reference = gaussian_flow_x0(noise, psd)
        print("reference: exact probability-flow solution")
    else:
        reference, _ = run(*REFERENCE, args.ref_steps)
        other, _ = run(REFERENCE[0], "crash", args.ref_steps)
        print(
            f"reference: {REFERENCE[0]}/{REFERENCE[1]} x {args.ref_steps}; floor (vs crash schedule): "
            f"RMS {rms(reference, other):.2e}"
        )
    ref_db = band_power_db(reference, edges)
    if psd is not None:
        rng = np.random.default_rng([args.seed, 99])
        draws = [
            band_power_db(exact_samples(rng, noise.shape, psd, args.analytic == "bimodal"), edges)
            for _ in range(8)
        ]
        floor = float(np.sqrt(np.mean([rms(draws[i], draws[i + 1]) ** 2 for i in range(0, 8, 2)])))
    else:
        second, _ = make_runner(denoise, start_noise(args.seed + 7, *noise.shape)[0], args.seed)(
            *REFERENCE, args.ref_steps
        )
        floor = rms(band_power_db(second, edges), ref_db)
    print(f"reference RMS level {rms(reference):.3f}; spectral sampling floor {floor:.3f} dB\n")

    def errors(out: np.ndarray, stochastic: bool) -> tuple[float, float]:
        spec = rms(band_power_db(out, edges), ref_db)
        if stochastic:  # a different sample: only the distribution can be compared, less the sampling floor
            return float("nan"), float(np.sqrt(max(spec**2 - floor**2, 0.0)))
        return rms(out, reference), spec

    rows = []
    print(f"{'sampler':14s} {'schedule':8s} {'steps':>5s} {'RMS err':>9s} {'spec dB':>8s} {'ms/run':>8s}")
    for name in names:
        info = SAMPLERS[name]
        chosen = {"default": [info.default_schedule], "all": list(SCHEDULES)}.get(
            args.schedules, args.schedules.split(",")
        )
        for schedule in chosen:
            for steps in step_counts:
                out, seconds = run(name, schedule, steps)
                err, spec = errors(out, info.stochastic)
                rows.append((name, schedule, steps, err, spec, seconds))
                print(f"{name:14s} {schedule:8s} {steps:5d} {err:9.2e} {spec:8.3f} {seconds * 1e3:8.1f}")

    base_err, base_spec = errors(run(*BASELINE)[0], False)
    print(
        f"\nbaseline {BASELINE[0]}/{BASELINE[1]} x {BASELINE[2]}: RMS {base_err:.2e}, spectral {base_spec:.3f} dB"
    )
    print("fewest steps reaching it (RMS for deterministic samplers, spectral dB for stochastic ones):")
    for name in names:
        stochastic = SAMPLERS[name].stochastic
        col, base = (4, base_spec) if stochastic else (3, base_err)
        for schedule in dict.fromkeys(r[1] for r in rows if r[0] == name):
            mine = [r for r in rows if r[0] == name and r[1] == schedule]
            good = [r[2] for r in mine if r[col] <= base]
            found = f"{min(good)} steps" if good else f"not within {max(step_counts)}"
            ratio = [r[col] / base for r in mine]
            per_step = np.median([r[5] / r[2] for r in mine]) * 1e3
            print(
                f"  {name:14s} {schedule:8s} {found:>18s}; error / baseline at {mine[0][2]}..{mine[-1][2]} steps: "
                f"{' '.join(f'{x:.2g}' for x in ratio)}; median {per_step:.2f} ms/step"
            )


if __name__ == "__main__":
    main()

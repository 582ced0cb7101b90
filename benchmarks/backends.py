"""torch eager vs torch.compile vs ONNX Runtime, side by side: forward time, generation time, peak RSS.

    python benchmarks/backends.py                      # the default model at 1 s, then the full 221M net at 65,536
    python benchmarks/backends.py --nets default       # only the small default model
    python benchmarks/backends.py --nets full --compile-timeout 180

For each network the parent process builds random weights (seed 0), saves them as .safetensors and
exports a verified ONNX file; then every backend runs in its own subprocess (so each peak RSS is its
own): a warm-up, the median of ``--repeats`` forwards at batch 1, and one end-to-end generation of
one sound with the default sampler at its default step count. Outputs are compared to torch eager
(channels-last, the torch backend's CPU path): forward max abs diff and generated audio max abs diff.

Backends: ``eager-cl`` (torch eager, channels-last 4-D path: what TorchBackend runs on the CPU),
``eager-1d`` (plain 1-D path), ``compile`` (torch.compile of eager-cl; on the full network abandoned,
and said so, if its first call has not finished within ``--compile-timeout`` seconds) and ``ort`` (ONNX
Runtime CPU; its subprocess never imports torch, as in the light install). Peak RSS is VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("eager-cl", "eager-1d", "compile", "ort")


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux: VmHWM, because ru_maxrss survives exec and so would report the
    parent's peak at the time it started this subprocess."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 1024


# --- child: one backend -------------------------------------------------------------------------------


def _torch_backend(kind: str, weights: str, threads: int):
    import torch

    from models.torch_backend import TorchBackend

    torch.set_num_threads(threads)
    backend = TorchBackend.load(Path(weights), device="cpu", precision="fp32")
    backend.model.channels_last = kind != "eager-1d"
    if kind == "compile":
        backend.model = torch.compile(backend.model)
    return backend


def run_child(args: argparse.Namespace) -> None:
    from models.generate import SamplingOptions, generate

    started = time.perf_counter()
    if args.child == "ort":
        from export.ort_backend import OrtBackend

        backend = OrtBackend.load(args.onnx, device="cpu", threads=args.threads)
    else:
        backend = _torch_backend(args.child, args.weights, args.threads)
    load_s = time.perf_counter() - started
    data = np.load(args.inputs)
    x, t = data["x"], data["t"]
    labels = data["labels"] if "labels" in data else None
    denoise = backend.denoiser(labels)
    watchdog = None
    if args.child == "compile" and args.compile_timeout:
        # give up on a compilation that takes longer than the budget (exit code 3 tells the parent)
        watchdog = threading.Timer(args.compile_timeout, lambda: os._exit(3))
        watchdog.start()
    started = time.perf_counter()
    first = denoise(x, t)  # warm-up; for torch.compile this is the compilation
    first_s = time.perf_counter() - started
    if watchdog is not None:
        watchdog.cancel()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        denoise(x, t)
        times.append(time.perf_counter() - started)
    result = {"backend": args.child, "load_s": load_s, "first_call_s": first_s, "forward_s": statistics.median(times),
              "forward_all_s": times}
    if args.e2e:
        category = backend.config.categories[0] if backend.config.categories else None
        options = SamplingOptions().resolved(backend.config)
        started = time.perf_counter()
        audio = generate(backend, [1234], category=category, length=x.shape[-1], options=options)
        result.update(e2e_s=time.perf_counter() - started, sampler=options.sampler, steps=options.steps)
        np.save(Path(args.out).with_suffix(".audio.npy"), audio)
    np.save(Path(args.out).with_suffix(".forward.npy"), first)
    result["peak_rss_mib"] = peak_rss_mib()
    result["torch_imported"] = "torch" in sys.modules
    Path(args.out).write_text(json.dumps(result))


# --- parent -------------------------------------------------------------------------------------------


def net_config(name: str):
    from models.config import ModelConfig, harmonai_config

    if name == "full":
        return harmonai_config(), 65536
    try:
        from models.default_recipe import DEFAULT_CONFIG as config
    except ImportError:
        config = ModelConfig(name="dd-default-v1", sample_rate=44100, sample_size=32768, depth=9,
                             c_mults=(8, 16, 16, 32, 32, 64, 64, 128, 128), n_attn_layers=1,
                             categories=tuple(f"class_{i}" for i in range(10)))
    return config, config.padded_length(config.sample_rate)  # 1 s of audio


def prepare(name: str, folder: Path, threads: int) -> dict:
    import torch

    from export.onnx_export import export_onnx
    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D, count_parameters

    torch.set_num_threads(threads)
    config, length = net_config(name)
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(config).eval()
    weights = save_model(model, folder / f"{name}.safetensors")
    report = export_onnx(model, folder / f"{name}.onnx", source_sha256="bench")
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((1, config.channels, length), dtype=np.float32),
              "t": np.array([0.7], dtype=np.float32)}
    if config.categories:
        inputs["labels"] = np.array([1], dtype=np.int64)
    np.savez(folder / f"{name}-inputs.npz", **inputs)
    return {"net": name, "parameters": count_parameters(model), "length": length, "weights": str(weights),
            "onnx": str(report.path), "inputs": str(folder / f"{name}-inputs.npz"),
            "export_s": report.export_seconds, "verify": report.summary()}


def run_backend(kind: str, net: dict, folder: Path, args: argparse.Namespace) -> dict:
    out = folder / f"{net['net']}-{kind}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--weights", net["weights"], "--onnx", net["onnx"],
           "--inputs", net["inputs"], "--out", str(out), "--threads", str(args.threads),
           "--repeats", str(args.full_repeats if net["net"] == "full" else args.repeats)]
    cmd += [] if args.e2e else ["--no-e2e"]
    budget = args.compile_timeout if net["net"] == "full" else 0  # the small net's compile is always measured
    cmd += ["--compile-timeout", str(budget)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if kind == "compile" and proc.returncode == 3:
        return {"backend": kind, "skipped": f"torch.compile had not finished after {budget} s; abandoned"}
    if proc.returncode != 0:
        return {"backend": kind, "skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(out.read_text())
    result["forward"] = np.load(out.with_suffix(".forward.npy"))
    audio = out.with_suffix(".audio.npy")
    result["audio"] = np.load(audio) if audio.exists() else None
    if kind == "compile":
        result["note"] = f"compile + first call took {result['first_call_s']:.0f} s"
    return result


def print_table(net: dict, results: list[dict]) -> None:
    print(f"\n== {net['net']}: {net['parameters']:,} parameters, batch 1 x {net['length']} samples ==")
    print(f"   export {net['export_s']:.1f} s; {net['verify']}")
    ref = next((r for r in results if r["backend"] == "eager-cl" and "skipped" not in r), None)
    header = (f"{'backend':<10} {'forward s':>10} {'x eager-cl':>10} {'x eager-1d':>10} {'e2e s':>8} "
              f"{'x e2e-cl':>9} {'x e2e-1d':>9} {'peak RSS':>9} {'load s':>7} {'1st call':>8} "
              f"{'fwd diff':>9} {'audio diff':>10}")
    print(header)
    plain = next((r for r in results if r["backend"] == "eager-1d" and "skipped" not in r), None)
    for r in results:
        if "skipped" in r:
            print(f"{r['backend']:<10} skipped: {r['skipped']}")
            continue

        def ratio(base: dict | None, key: str, r: dict = r) -> str:
            return f"{base[key] / r[key]:.2f}x" if base and r.get(key) and base.get(key) else "-"

        fwd_diff = f"{np.abs(r['forward'] - ref['forward']).max():.1e}" if ref else "-"
        audio_diff = (f"{np.abs(r['audio'] - ref['audio']).max():.1e}"
                      if ref and r.get("audio") is not None and ref.get("audio") is not None else "-")
        e2e = f"{r['e2e_s']:.2f}" if "e2e_s" in r else "-"
        print(f"{r['backend']:<10} {r['forward_s']:>10.3f} {ratio(ref, 'forward_s'):>10} {ratio(plain, 'forward_s'):>10} "
              f"{e2e:>8} {ratio(ref, 'e2e_s'):>9} {ratio(plain, 'e2e_s'):>9} {r['peak_rss_mib']:>7.0f}Mi "
              f"{r['load_s']:>7.1f} {r['first_call_s']:>8.1f} {fwd_diff:>9} {audio_diff:>10}")
        if r.get("note"):
            print(f"{'':<10} note: {r['note']}")
    ort = next((r for r in results if r["backend"] == "ort" and "skipped" not in r), None)
    if ort:
        print(f"   the ort subprocess imported torch: {ort['torch_imported']}")
    if ref and "e2e_s" in ref:
        print(f"   e2e = one sound, {ref['sampler']} x {ref['steps']} steps (the default); "
              "ratios are eager time / this backend's time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", choices=("default", "full"), default=["default", "full"])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per backend (default net)")
    parser.add_argument("--full-repeats", type=int, default=3, help="timed forwards per backend (full net)")
    parser.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end generations")
    parser.add_argument("--compile-timeout", type=int, default=180,
                        help="seconds torch.compile may take on the full network (default 180)")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    for hidden in ("--weights", "--onnx", "--inputs", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; "
          f"load average before: {os.getloadavg()[0]:.2f}, {os.getloadavg()[1]:.2f}, {os.getloadavg()[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.nets:
            net = prepare(name, folder, args.threads)
            results = []
            for kind in args.backends:
                results.append(run_backend(kind, net, folder, args))
            print_table(net, results)
            sys.stdout.flush()
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

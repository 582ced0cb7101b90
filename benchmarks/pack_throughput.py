"""Pack throughput: sounds per second on one process vs a local Ray cluster, and 10,000 sounds projected.

    python benchmarks/pack_throughput.py                    # 200 sounds, steps 10, 0.5 s each, Ray 2 workers
    python benchmarks/pack_throughput.py --count 40 --workers 2

The same spec (every category of the shipped model, the count split between them) is rendered twice
into fresh folders: in this process (threads 1, the spec's setting) and on a local Ray cluster of
``--workers`` workers (one actor each, threads 1). Rates are sounds over the render time (the model
loaded before it, Ray's start-up shown apart); both packs must be bit-identical, which is checked.
Per-worker throughput and the projection for 10,000 sounds on N workers come from the Ray run. The
2048x2048 fp32 GEMM rate is measured at the start and the end of the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import gemm_gflops  # noqa: E402
from companion.engine.model_files import load_backend  # noqa: E402
from companion.pack.runner import make_pack  # noqa: E402
from companion.pack.spec import load_spec  # noqa: E402


def spec_text(count: int, steps: int, seconds: float, categories: list[str]) -> str:
    per, extra = divmod(count, len(categories))
    lines = ['[pack]', 'name = "bench"', 'seed = 1', 'threads = 1', '', '[sampling]', f'steps = {steps}',
             f'seconds = {seconds}', '']
    for i, cat in enumerate(categories):
        n = per + (1 if i < extra else 0)
        if n:
            lines += [f'[categories.{cat}]', f'count = {n}', '']
    return "\n".join(lines)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.wav")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="sounds in the pack (default 200)")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (default 10)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each sound (default 0.5)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--chunk", type=int, default=4, help="sounds per Ray task (default 4)")
    args = parser.parse_args()
    import ray

    gemm_before = gemm_gflops()
    categories = list(load_backend(None).config.categories)
    work = Path(tempfile.mkdtemp(prefix="ddpackbench"))
    rows = {}
    for mode in ("single", "ray"):
        folder = work / mode
        folder.mkdir()
        (folder / "spec.toml").write_text(spec_text(args.count, args.steps, args.seconds, categories))
        spec = load_spec(folder / "spec.toml")
        if mode == "ray":
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))
            ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", _temp_dir=tempfile.mkdtemp(prefix="ddray", dir="/tmp"))
            summary = make_pack(spec, ray="auto", workers=args.workers, chunk=args.chunk, stream=None)
            ray.shutdown()
            seconds = summary.ray["render_s"]
            rows[mode] = dict(rate=summary.rendered / seconds, seconds=seconds, startup=summary.ray["startup_s"],
                              per_worker=summary.ray["per_worker"], digest=digest(spec.out))
        else:
            summary = make_pack(spec, stream=None)
            rows[mode] = dict(rate=summary.rate, seconds=summary.seconds, startup=0.0, digest=digest(spec.out))
    gemm_after = gemm_gflops()
    single, on_ray = rows["single"], rows["ray"]
    per_worker = on_ray["rate"] / args.workers
    print(f"pack of {args.count} sounds (every category), steps {args.steps}, {args.seconds} s each, threads 1; "
          f"GEMM 2048^2 fp32: {gemm_before:.1f} GFLOP/s before, {gemm_after:.1f} after; {os.cpu_count()} CPUs")
    print(f"  one process      : {single['rate']:.3f} sounds/s ({single['seconds']:.1f} s)")
    print(f"  ray, {args.workers} workers   : {on_ray['rate']:.3f} sounds/s ({on_ray['seconds']:.1f} s render, "
          f"{on_ray['startup']:.1f} s start-up), {on_ray['rate'] / single['rate']:.2f}x one process")
    print(f"  per Ray worker   : {per_worker:.3f} sounds/s; sounds per worker: {on_ray['per_worker']}")
    print(f"  bit-identical    : {single['digest'] == on_ray['digest']}")
    print("  10,000 sounds projected from the per-worker rate (start-up excluded):")
    for n in (1, 2, 8, 32, 128):
        print(f"    {n:4d} workers: {10000 / (per_worker * n) / 60:8.1f} min")


if __name__ == "__main__":
    main()

"""How long the shipped default model takes to make one second of audio, per sampling setting and runtime.

    python benchmarks/default_speed.py                  # 1 s of audio, batch 1, median of 3, both runtimes
    python benchmarks/default_speed.py --seconds 0.74 --repeats 5 --backends onnxruntime

Each row is one setting (the model's recommendation first), run side by side on torch and ONNX Runtime
after a warm-up: the median wall time of ``--repeats`` generations of one sound, its network calls
(a guided step costs one call of twice the batch; outside the guidance interval a step is one plain
call), and the ratio to the recommended setting on the same runtime. Issue 3's target: well under 1 s
per second of audio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from companion.engine.model_files import load_backend  # noqa: E402
from models.backend import available_backends  # noqa: E402
from models.finish import finish  # noqa: E402
from models.generate import SamplingOptions, generate  # noqa: E402
from models.schedules import make_schedule  # noqa: E402

SETTINGS: list[tuple[str, SamplingOptions]] = [
    ("model's recommendation", SamplingOptions()),
    ("guidance 2 (two calls a step)", SamplingOptions(guidance=2.0)),
    ("dpmpp-2m-sde x 30", SamplingOptions("dpmpp-2m-sde", 30)),
    ("dpmpp-2m-sde x 15", SamplingOptions("dpmpp-2m-sde", 15)),
    ("dpmpp-2m-sde x 10", SamplingOptions("dpmpp-2m-sde", 10)),
    ("dpmpp-2m x 10", SamplingOptions("dpmpp-2m", 10)),
]


def batch_calls(options: SamplingOptions) -> float:
    """Network work of one generation in batch-1 calls: a guided step counts two."""
    ts = make_schedule(options.schedule, options.steps)[:-1]
    low, high = options.guidance_interval
    guided = sum(1 for t in ts if options.guidance != 1.0 and low <= t <= high)
    return len(ts) + guided


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path or name (default: the shipped model)")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--category", default="kick")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=("torch", "onnxruntime"))
    args = parser.parse_args()

    backends = [b for b in args.backends if b in available_backends()]
    loaded = {name: load_backend(args.model, backend=name) for name in backends}
    config = next(iter(loaded.values())).config
    length = config.length_for_seconds(args.seconds)
    print(f"model {config.name}: {args.seconds:g} s of audio ({length} samples), batch 1, median of {args.repeats}")
    print(f"{'setting':<30}{'sampler x steps':<20}{'guidance':<18}{'calls':>6}"
          + "".join(f"{name + ' s':>16}{'ratio':>7}" for name in backends))
    baseline: dict[str, float] = {}
    for label, options in SETTINGS:
        opts = options.resolved(config)
        cells = ""
        for name, backend in loaded.items():
            generate(backend, [0], category=args.category, length=length, options=opts)  # warm-up
            times = []
            for i in range(args.repeats):
                start = time.perf_counter()
                generate(backend, [i + 1], category=args.category, length=length, options=opts)
                times.append(time.perf_counter() - start)
            median = statistics.median(times) / args.seconds
            baseline.setdefault(name, median)
            cells += f"{median:16.3f}{median / baseline[name]:7.2f}"
        guidance = "none" if opts.guidance == 1.0 else f"{opts.guidance:g} in [{opts.guidance_interval[0]:g}, " \
                                                        f"{opts.guidance_interval[1]:g}]"
        print(f"{label:<30}{opts.sampler + ' x ' + str(opts.steps):<20}{guidance:<18}{batch_calls(opts):6.0f}{cells}")
    print("(s = seconds per second of audio; target: well under 1)")
    # the finish stage runs on every sound after sampling; the tail gate is its only part that scales with the audio
    sound = generate(next(iter(loaded.values())), [1], category=args.category, length=length,
                     options=SamplingOptions(tail_gate_db=0.0))[0]
    cost = {}
    for gate in (0.0, config.tail_gate_db or -40.0):
        times = []
        for _ in range(max(5, args.repeats)):
            start = time.perf_counter()
            finish(sound, config.sample_rate, config.fade_out_ms, gate)
            times.append(time.perf_counter() - start)
        cost[gate] = statistics.median(times) / args.seconds * 1000
    print("finish stage: " + ", ".join(f"{'no tail gate' if g == 0 else f'tail gate {g:g} dB'} {ms:.1f} ms"
                                       for g, ms in cost.items()) + " per second of audio")


if __name__ == "__main__":
    main()

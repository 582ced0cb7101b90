"""How close the default network runs to this machine's limit, per runtime, in one run.

    python -m benchmarks.roofline                     # 1 s of audio, batch 1 and 4, median of 5
    python -m benchmarks.roofline --seconds 0.743 --batches 1 2 4 8 --repeats 7

Machines of one kind differ several times in speed, so every figure here sits beside the machine's own
yardstick, measured first in the same run with the thread count the companion uses (``physical_cores``,
what ``export/providers.py`` gives ONNX Runtime; torch gets the same):

- the fp32 rate of a large matrix product (2048x2048, torch's and NumPy's; the higher is the yardstick);
- the rate of the network's own convolutions, each layer shape alone (the same kernels the network runs);
- the network's FLOPs per forward, counted with ``torch.utils.flop_counter``;
- per runtime and batch: ms per forward, achieved GFLOP/s, **efficiency = achieved / GEMM rate**, and
  per-sound cost against batch size;
- per sampling setting: the floor in seconds per second of audio (its network calls at the GEMM rate)
  beside what each runtime achieves.

It also prints the thread settings, the torch and ONNX Runtime build facts, and every environment
variable that changes them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.machine import describe, gemm_gflops
from export.providers import physical_cores

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS",
               "DNNL_VERBOSE", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "KMP_AFFINITY", "GOMP_CPU_AFFINITY")


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def count_flops(model: object, x: object, t: object, labels: object) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, t, labels)
    return int(counter.get_total_flops())


def conv_rates(model: object, x: object, t: object, labels: object, repeats: int) -> list[tuple[str, float, float]]:
    """(shape, GFLOP per call, GFLOP/s) for each distinct convolution of one forward, the costliest first."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    seen: dict[tuple, tuple[torch.nn.Module, torch.Tensor]] = {}

    def hook(module: torch.nn.Module, inputs: tuple) -> None:
        key = (type(module).__name__, tuple(inputs[0].shape), tuple(module.weight.shape))
        seen.setdefault(key, (module, inputs[0].detach().clone()))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d)]
    with torch.inference_mode():
        model(x, t, labels)
    for h in handles:
        h.remove()
    rows = []
    for (kind, shape, weight), (module, inp) in seen.items():
        with torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
                module(inp)
            flops = counter.get_total_flops()
            seconds = median_time(lambda m=module, i=inp: m(i), repeats)
        rows.append((f"{kind} in {list(shape)} w {list(weight)}", flops / 1e9, flops / seconds / 1e9))
    return sorted(rows, key=lambda r: -r[1])


def build_facts() -> list[str]:
    import onnxruntime as ort
    import torch

    facts = [f"torch {torch.__version__}: intra-op threads {torch.get_num_threads()}, "
             f"inter-op {torch.get_num_interop_threads()}, oneDNN {torch.backends.mkldnn.is_available()}, "
             f"MKL {torch.backends.mkl.is_available()}, CPU capability {torch.backends.cpu.get_cpu_capability()}"]
    facts.append(f"onnxruntime {ort.__version__}: {ort.get_device()}, providers {ort.get_available_providers()}"
                 + (f", build: {ort.get_build_info()}" if hasattr(ort, "get_build_info") else ""))
    env = {k: os.environ[k] for k in THREAD_VARS if k in os.environ}
    facts.append(f"thread environment: {env or 'none set (the companion chooses)'}")
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="audio per sound (default 1 s)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 and 4: "
                    "the pool's batch on a GPU; on the CPU the pool renders 1 at a time)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--convs", type=int, default=6, help="convolution shapes to print (costliest first)")
    args = ap.parse_args()

    import torch

    from companion.engine.model_files import load_backend
    from models.generate import SamplingOptions
    from models.registry import DEFAULT_MODEL

    threads = physical_cores()
    torch.set_num_threads(threads)
    print(f"machine: {describe()}; threads used: {threads} (the companion's choice: physical cores)")
    for fact in build_facts():
        print(f"  {fact}")
    rates = {"torch": torch_gemm_gflops(), "NumPy": gemm_gflops()}
    gemm = max(rates.values())  # the machine's limit, whichever library reaches it
    print("fp32 GEMM 2048x2048: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items())
          + f"; the yardstick below is the higher, {gemm:.1f}")

    tb = load_backend(DEFAULT_MODEL, backend="torch", device="cpu")
    ob = load_backend(DEFAULT_MODEL, backend="onnxruntime", device="cpu")
    config = tb.config
    length = config.padded_length(config.length_for_seconds(args.seconds))
    audio_s = length / config.sample_rate
    labels = np.zeros(1, dtype=np.int64)
    x1 = torch.randn(1, config.channels, length)
    t1 = torch.full((1,), 0.5)
    flops = count_flops(tb.model, x1, t1, torch.as_tensor(labels))
    per_audio_s = flops / audio_s
    print(f"model {config.name}: {length} samples ({audio_s:.3f} s) per sound; {flops / 1e9:.2f} GFLOP per forward "
          f"at batch 1 ({per_audio_s / 1e9:.2f} GFLOP per second of audio)")

    print(f"\nthe network's convolutions alone (torch, {threads} threads), costliest first:")
    for shape, gf, rate in conv_rates(tb.model, x1, t1, torch.as_tensor(labels), args.repeats)[:args.convs]:
        print(f"  {shape:60s} {gf:6.3f} GFLOP  {rate:6.1f} GFLOP/s  efficiency {rate / gemm:.2f}")

    print(f"\nper forward (median of {args.repeats}):")
    print(f"  {'runtime':12s} {'batch':>5s} {'ms/forward':>11s} {'ms/sound':>9s} {'GFLOP/s':>8s} {'efficiency':>10s}")
    per_sound: dict[str, float] = {}
    for name, backend in (("torch", tb), ("onnxruntime", ob)):
        for batch in args.batches:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch, config.channels, length)).astype(np.float32)
            t = np.full((batch,), 0.5, dtype=np.float32)
            denoise = backend.denoiser(np.zeros(batch, dtype=np.int64))
            seconds = median_time(lambda d=denoise, x=x, t=t: d(x, t), args.repeats)
            rate = flops * batch / seconds / 1e9
            if batch == 1:
                per_sound[name] = seconds
            print(f"  {name:12s} {batch:5d} {seconds * 1e3:11.1f} {seconds / batch * 1e3:9.1f} {rate:8.1f} "
                  f"{rate / gemm:10.2f}")

    print("\nseconds per second of audio at batch 1 (network calls only; the floor is those calls at the GEMM rate):")
    settings = [("model's recommendation", SamplingOptions()), ("dpmpp-2m-sde x 10", SamplingOptions("dpmpp-2m-sde", 10)),
                ("8 calls (a student's budget)", None), ("4 calls", None)]
    from benchmarks.default_speed import batch_calls

    for label, options in settings:
        calls = batch_calls(options.resolved(config)) if options is not None else float(label.split()[0])
        floor = calls * per_audio_s / (gemm * 1e9)
        achieved = "  ".join(f"{name} {calls * s / audio_s:6.2f}" for name, s in per_sound.items())
        print(f"  {label:30s} {calls:5.0f} calls  floor {floor:6.2f}   {achieved}")


if __name__ == "__main__":
    main()

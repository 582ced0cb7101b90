"""Request -> /dd/done latency over real UDP, and throughput under sustained load.

    python -m benchmarks.osc_latency [--model PATH | --tiny] [--requests 100] [--fresh 20] [--seconds-of-load 20]

Starts an in-process companion (OSC on a free loopback port, output in a temporary folder) and
measures, with a real OSC client:

- pooled:  /dd/generate <category> answered from the pre-render pool (the time includes writing
           and fsyncing the WAV and its sidecar); before each request the benchmark waits, untimed,
           until the pool holds a sample again.
- fresh:   /dd/generate <category> 1 <seed> (a named seed never comes from the pool): a full render.
- load:    requests kept in flight for a while (pool off): finished samples per minute.

The model is --model, else the shipped default model when present, else a tiny random network
(said so in the output: its numbers measure the companion's overhead, not a real model).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from companion.config.settings import Settings
from companion.service.resident import Companion
from models.registry import DEFAULT_MODEL
from osc_protocol.client import OscClient


def tiny_model(folder: Path) -> Path:
    import torch

    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D
    from tests.reference_nets import tiny_config

    torch.manual_seed(0)
    config = tiny_config(name="tiny-random", categories=("kick", "snare"), depth=4, c_mults=(8, 16, 16, 32),
                         n_attn_layers=0, sample_size=16384)
    return save_model(DiffusionAttnUnet1D(config), folder / "tiny-random.safetensors")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<8} n={len(ms):<4} median {statistics.median(ms):8.2f} ms   p99 {percentile(ms, 99):8.2f} ms   "
            f"min {min(ms):8.2f} ms   max {max(ms):8.2f} ms")


def timed_request(client: OscClient, *message: object) -> float:
    client.drain()
    t0 = time.perf_counter()
    client.send(*message)
    address, args = client.wait_for(("/dd/done", "/dd/error"))
    if address != "/dd/done":
        raise RuntimeError(f"{message[0]} failed: {args}")
    return time.perf_counter() - t0


def wait_for_pool(companion: Companion, category: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while companion.pool.counts().get(category, 0) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pool did not refill {category} in {timeout:g} s")
        time.sleep(0.002)


def pooled_takes(companion: Companion, category: str, n: int) -> tuple[list[float], list[float]]:
    """In-process: how long submit() takes for a pooled request (the answer, excluding the write),
    and how long the write then takes (request -> file in place)."""
    from companion.engine.requests import GenerateRequest

    takes, totals = [], []
    for _ in range(n):
        wait_for_pool(companion, category)
        t0 = time.perf_counter()
        job = companion.engine.submit(GenerateRequest(category))
        takes.append(time.perf_counter() - t0)
        result = job.future.result(600)
        totals.append(time.perf_counter() - t0)
        if result.pooled != 1:
            raise RuntimeError("a request that should have come from the pool was rendered")
    return takes, totals


def sustained_load(companion: Companion, client: OscClient, category: str, seconds: float, in_flight: int) -> float:
    """Samples per minute with ``in_flight`` requests outstanding at all times (pool off)."""
    outstanding, done = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or outstanding:
        while outstanding < in_flight and time.perf_counter() - t0 < seconds:
            client.send("/dd/generate", category)
            outstanding += 1
        message = client.receive(1.0)
        if message is None:
            continue
        address, args = message
        if address == "/dd/done":
            outstanding -= 1
            done += len(args) - 1
        elif address == "/dd/error":
            outstanding -= 1
            if args[1] != "busy":
                raise RuntimeError(f"request failed under load: {args}")
    return done / (time.perf_counter() - t0) * 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file (default: the shipped model, else a tiny random one)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model even if the default exists")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    parser.add_argument("--category", help="category to request (default: the model's first)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    parser.add_argument("--requests", type=int, default=100, help="pooled requests to time (default 100)")
    parser.add_argument("--fresh", type=int, default=20, help="fresh generations to time (default 20)")
    parser.add_argument("--seconds-of-load", type=float, default=20.0, help="length of the load test (default 20)")
    parser.add_argument("--in-flight", type=int, default=4, help="requests outstanding during the load test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="dd-bench-") as tmp:
        if args.model is not None:
            model, note = args.model, f"model {args.model}"
        elif DEFAULT_MODEL.is_file() and not args.tiny:
            model, note = DEFAULT_MODEL, "the shipped default model"
        else:
            model = tiny_model(Path(tmp))
            why = "--tiny" if args.tiny else "the default model is not built yet"
            note = (f"a TINY RANDOM model ({why}): these numbers measure the companion's overhead, "
                    "not the cost of a real model")
        settings = Settings(folder=str(Path(tmp) / "out"), osc_port=0, model=str(model), device=args.device,
                            steps=args.steps, pool_size=0, queue_limit=64)
        companion = Companion(settings)
        companion.start()
        try:
            facts = companion.engine.model
            category = args.category or (facts.categories[0] if facts.categories else "sample")
            companion.pool.set_categories([category] if facts.categories else [])
            companion.engine.set_param("pool_size", 4)
            print(f"benchmark with {note}")
            print(f"  {facts.name} on {facts.runtime}, {facts.seconds:.3f} s at {facts.sample_rate} Hz, "
                  f"{args.steps} steps of {companion.engine.get_param('sampler')}, batch size "
                  f"{companion.engine.batch_size()}, category {category}")
            with OscClient(*companion.server.address, timeout=600.0) as client:
                pooled = []
                for _ in range(args.requests):
                    wait_for_pool(companion, category)
                    pooled.append(timed_request(client, "/dd/generate", category))
                takes, written = pooled_takes(companion, category, args.requests)
                fresh = [timed_request(client, "/dd/generate", category, 1, seed) for seed in range(args.fresh)]
                client.request("/dd/set", "pool_size", 0)
                rate = sustained_load(companion, client, category, args.seconds_of_load, args.in_flight)
            print(summary("take", takes) + "   (in-process submit of a pooled request: the answer, no write)")
            print(summary("written", written) + "   (in-process, submit -> WAV + sidecar in place)")
            print(summary("pooled", pooled) + "   (OSC request -> /dd/done, write included)")
            print(summary("fresh", fresh))
            print(f"load     {rate:8.1f} samples/minute with {args.in_flight} requests in flight for "
                  f"{args.seconds_of_load:g} s (pool off)")
        finally:
            companion.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

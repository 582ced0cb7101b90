"""Pad latency and underruns on a real JACK server, audio in this process vs in the audio process.

Starts ``jackd -d dummy -R -p 256`` (needs jackd2, libportaudio2, JACK-Client, mido, python-rtmidi),
a companion with a tiny random model (or ``--model``), and a recorder in its own process. Each
configuration runs in turn in the same run, with the same engine: the live rig with its audio stream
in this process (``process=False``) and in the separate audio process (the default).

- latency: each hit is timed on JACK's clock, from the frame time when the companion's MIDI handler
  got the note to the frame at which its sound first appears in the recording; median / p99 over
  ``--hits`` (pooled samples, "keep" behaviour), with one device period subtracted and reported apart;
- underruns: PortAudio underruns (counted in the stream's callback) and JACK xruns/skipped cycles (seen
  by the recorder) during ``--seconds`` of hits while the engine generates in the background.

    .venv/bin/python -m benchmarks.pad_latency [--hits 200] [--seconds 60] [--process-first]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SERVER = f"ddbench{os.getpid()}"
RATE, PERIOD = 48000, 256
PERIOD_MS = PERIOD / RATE * 1000
MODES = (("in-process", False), ("audio process", True))


def start_jack() -> subprocess.Popen:
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    os.environ["MIDO_BACKEND"] = "mido.backends.rtmidi/UNIX_JACK"
    server = subprocess.Popen(["jackd", "-n", SERVER, "-R", "-P", "70", "-d", "dummy", "-r", str(RATE),
                               "-p", str(PERIOD)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["jack_wait", "-w", "-t", "10"], check=True, capture_output=True)
    return server


def tiny_model(folder: Path) -> Path:
    import torch

    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D
    from tests.reference_nets import tiny_config

    torch.manual_seed(0)
    config = tiny_config(name="tiny", categories=("kick", "snare"), depth=4, c_mults=(8, 16, 16, 32),
                         n_attn_layers=0, sample_size=512)  # 32 ms: silence between hits
    return save_model(DiffusionAttnUnet1D(config), folder / "tiny.safetensors")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_mode(name: str, process: bool, engine: Any, recorder: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Latency, then underruns under load, for one live rig."""
    import mido

    from companion.engine.requests import GenerateRequest
    from companion.live.rig import attach_live

    virtual = f"DD Bench {name}"
    rig = attach_live(engine, midi_port=None, audio_device="system", virtual_name=virtual,
                      pads={"behaviour": "keep"}, process=process)
    if rig.audio.error is not None:
        raise SystemExit(f"{name}: {rig.audio.error}")
    rig.rack.wait_ready([36], 60)
    recorder.connect_to()
    arrivals: list[int] = []
    handle = rig.rack.handle

    def timed(message: Any) -> None:  # the MIDI thread: the note has arrived
        if message.type == "note_on":
            arrivals.append(recorder.now())
        handle(message)

    rig.midi.on_message = timed
    port = mido.open_output(f"RtMidiIn Client:{virtual}")
    rig.rack.hit(36, 0)  # pick the pad's sample: every later hit is served from memory
    time.sleep(0.2)  # (and, with the audio process, it is shared with it before the first hit)

    def play(n: int, interval: float) -> None:
        for _ in range(n):
            port.send(mido.Message("note_on", note=36, velocity=127, channel=9))
            time.sleep(interval)

    # ---- latency
    recorder.start()
    time.sleep(0.1)
    g0 = recorder.glitches()
    play(args.hits, args.interval)
    time.sleep(0.2)
    audio = recorder.stop()
    latencies = []
    for frame in arrivals:
        i = recorder.index_of(frame)
        if i < 0 or i >= len(audio):
            continue
        nz = np.flatnonzero(audio[max(0, i - PERIOD):i + RATE // 10, 0])
        if len(nz):
            latencies.append((max(0, i - PERIOD) + int(nz[0]) - i) / RATE * 1000)
    result: dict[str, Any] = {"sent": len(arrivals), "latencies": latencies,
                              "latency_glitches": recorder.glitches() - g0}

    # ---- underruns while the engine generates
    stop = threading.Event()
    generated = [0]

    def generate() -> None:
        while not stop.is_set():
            try:
                engine.submit(GenerateRequest("kick", fresh=True, origin="bench")).future.result(60)
                generated[0] += 1
            except Exception:
                time.sleep(0.05)

    mixer = rig.audio.mixer
    u0, g0 = mixer.underruns, recorder.glitches()
    worker = threading.Thread(target=generate, daemon=True)
    recorder.start()
    worker.start()
    started = time.monotonic()
    play(int(args.seconds / 0.25), 0.25)
    stop.set()
    worker.join(60)
    recorder.stop()
    result.update(load_seconds=time.monotonic() - started, underruns=mixer.underruns - u0,
                  xruns=recorder.glitches() - g0, generated=generated[0], audio=rig.audio.describe())
    port.close()
    rig.stop()
    return result


def report(results: dict[str, dict[str, Any]], seconds: float) -> None:
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fmt: Any) -> None:
        rows.append((label, [fmt(results[n]) for n in names]))

    row("hits sent / measured", lambda r: f"{r['sent']} / {len(r['latencies'])}")
    row("JACK xruns/skips during the latency run", lambda r: str(r["latency_glitches"]))
    row("note -> first sample, median (ms)", lambda r: f"{statistics.median(r['latencies']):.2f}")
    row("note -> first sample, p99 (ms)", lambda r: f"{pct(r['latencies'], 99):.2f}")
    row("beyond one period, median (ms)", lambda r: f"{statistics.median(r['latencies']) - PERIOD_MS:.2f}")
    row("beyond one period, p99 (ms)", lambda r: f"{pct(r['latencies'], 99) - PERIOD_MS:.2f}")
    row(f"PortAudio underruns, {seconds:g} s under load", lambda r: str(r["underruns"]))
    row(f"JACK xruns/skips, {seconds:g} s under load", lambda r: str(r["xruns"]))
    row("engine jobs finished meanwhile", lambda r: str(r["generated"]))
    width = max(len(label) for label, _ in rows)
    print(f"\ndevice period {PERIOD_MS:.2f} ms ({PERIOD} frames at {RATE} Hz)")
    for name in names:
        print(f"{name}: {results[name]['audio']}")
    print(f"\n{'':{width}}  " + "  ".join(f"{n:>14}" for n in names))
    for label, values in rows:
        print(f"{label:{width}}  " + "  ".join(f"{v:>14}" for v in values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.08, help="seconds between hits")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run under load, per mode")
    parser.add_argument("--model", help="model file (default: a tiny random one)")
    parser.add_argument("--process-first", action="store_true", help="run the audio-process rig first "
                        "(swap the order to see how much a shared machine's load moved between the runs)")
    args = parser.parse_args(argv)

    server = start_jack()
    work = Path(tempfile.mkdtemp(prefix="dd-bench-"))
    try:
        import mido
        import torch

        from companion.config.settings import Params
        from companion.engine.engine import Engine
        from companion.engine.pool import Pool
        from companion.live import audio_device
        from companion.output.folder import SampleFolder
        from tests import conftest_jack

        conftest_jack.SERVER = SERVER
        mido.set_backend("mido.backends.rtmidi/UNIX_JACK", load=True)
        audio_device.rescan_devices()
        torch.set_num_threads(1)
        engine = Engine(SampleFolder(work / "out"), params=Params(steps=3, pool_size=1))
        engine.load(args.model or tiny_model(work), device="cpu")
        pool = Pool(engine)
        engine.start()
        pool.start()
        recorder = conftest_jack.Recorder(str(work), seconds=max(args.hits * args.interval, args.seconds) + 10)
        results = {}
        for name, process in (MODES[::-1] if args.process_first else MODES):
            print(f"{name}: {args.hits} hits, then {args.seconds:g} s of hits under load...", flush=True)
            results[name] = run_mode(name, process, engine, recorder, args)
        report({name: results[name] for name, _ in MODES}, args.seconds)
        engine.shutdown(10)
        recorder.close()
        audio_device.terminate()
        return 0
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())

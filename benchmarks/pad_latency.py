"""Pad latency on a real JACK server: MIDI note arrival -> first non-zero sample at the JACK port.

Starts ``jackd -d dummy -R -p 256`` (needs jackd2, libportaudio2, JACK-Client, mido, python-rtmidi),
a companion with a tiny random model (or ``--model``), and a recorder in its own process. Each hit
is timed on JACK's clock: the frame time when the companion's MIDI handler got the note, and the
frame at which its sound first appears in the recording. Reports median / p99 over ``--hits``
(pooled samples, "keep" behaviour), one device period subtracted and reported apart; then
underruns and xruns during ``--seconds`` of hits while the engine generates in the background.

    .venv/bin/python -m benchmarks.pad_latency [--hits 200] [--seconds 60]
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

import numpy as np

SERVER = f"ddbench{os.getpid()}"
RATE, PERIOD = 48000, 256


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.08, help="seconds between hits")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run under load")
    parser.add_argument("--model", help="model file (default: a tiny random one)")
    args = parser.parse_args(argv)

    server = start_jack()
    work = Path(tempfile.mkdtemp(prefix="dd-bench-"))
    try:
        import mido
        import torch

        from companion import audio_out
        from companion.engine import Engine
        from companion.folder import SampleFolder
        from companion.live import attach_live
        from companion.pool import Pool
        from companion.requests import GenerateRequest
        from companion.settings import Params
        from tests import conftest_jack

        conftest_jack.SERVER = SERVER
        mido.set_backend("mido.backends.rtmidi/UNIX_JACK", load=True)
        audio_out.rescan_devices()
        torch.set_num_threads(1)
        engine = Engine(SampleFolder(work / "out"), params=Params(steps=3, pool_size=1))
        engine.load(args.model or tiny_model(work), device="cpu")
        pool = Pool(engine)
        engine.start()
        pool.start()
        rig = attach_live(engine, midi_port=None, audio_device="system", virtual_name="DD Bench",
                          pads={"behaviour": "keep"})
        rig.rack.wait_ready([36], 60)
        recorder = conftest_jack.Recorder(str(work), seconds=max(args.hits * args.interval, args.seconds) + 10)
        recorder.connect_to()
        arrivals: list[int] = []
        handle = rig.rack.handle

        def timed(message):  # the MIDI thread: the note has arrived
            if message.type == "note_on":
                arrivals.append(recorder.now())
            handle(message)

        rig.midi.on_message = timed
        port = mido.open_output("RtMidiIn Client:DD Bench")
        rig.rack.hit(36, 0)  # pick the pad's sample: every later hit is served from memory

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
        glitches = recorder.glitches() - g0
        latencies = []
        for frame in arrivals:
            i = recorder.index_of(frame)
            if i < 0 or i >= len(audio):
                continue
            nz = np.flatnonzero(audio[max(0, i - PERIOD):i + RATE // 10, 0])
            if len(nz):
                latencies.append((max(0, i - PERIOD) + int(nz[0]) - i) / RATE * 1000)
        period_ms = PERIOD / RATE * 1000
        print(f"hits: {len(arrivals)} sent, {len(latencies)} measured; JACK xruns/skipped cycles: {glitches}")
        print(f"device period: {period_ms:.2f} ms ({PERIOD} frames at {RATE} Hz), reported apart")
        print(f"note arrival -> first sample at the port: median {statistics.median(latencies):.2f} ms, "
              f"p99 {pct(latencies, 99):.2f} ms, max {max(latencies):.2f} ms")
        beyond = [x - period_ms for x in latencies]
        print(f"beyond one period: median {statistics.median(beyond):.2f} ms, p99 {pct(beyond, 99):.2f} ms")

        # ---- underruns while the engine generates
        arrivals.clear()
        stop = threading.Event()

        def generate() -> None:
            while not stop.is_set():
                try:
                    engine.submit(GenerateRequest("kick", fresh=True, origin="bench")).future.result(60)
                except Exception:
                    time.sleep(0.05)

        u0, g0 = rig.audio.mixer.underruns, recorder.glitches()
        worker = threading.Thread(target=generate, daemon=True)
        recorder.start()
        worker.start()
        started = time.monotonic()
        play(int(args.seconds / 0.25), 0.25)
        stop.set()
        worker.join(60)
        recorder.stop()
        print(f"{time.monotonic() - started:.0f} s of hits while the engine generated: "
              f"{rig.audio.mixer.underruns - u0} PortAudio underruns, {recorder.glitches() - g0} JACK xruns/skips")
        port.close()
        rig.stop()
        engine.shutdown(10)
        recorder.close()
        audio_out.terminate()
        return 0
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())

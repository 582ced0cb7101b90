"""``dd-companion serve``: the headless resident companion (model, engine, pool, OSC, watched folder).

Settings come from the config file (see :mod:`companion.config.settings`), then the command-line flags;
``--save-settings`` writes the result back. ``live = 1`` (or ``--live``, ``--midi``, ``--audio``) also
starts the live rig: MIDI pads with the pad map of the file's ``[pads]`` table, and the audio output.
What runs is a :class:`companion.service.resident.Companion`. Ctrl-C or SIGTERM stops it cleanly: the
OSC server stops, queued and running jobs are cancelled, writes in progress finish (never a partial
file), and the process exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import textwrap
import threading
from pathlib import Path
from types import FrameType

from companion.config.settings import Settings, describe, load_settings, save_settings, settings_path
from companion.output.folder import OutputError
from companion.service.resident import Companion
from models.backend import BACKENDS
from models.config import MAX_GUIDANCE
from models.samplers import DEFAULT_SAMPLER, SAMPLERS

log = logging.getLogger("dd.serve")

# flag dest -> settings key (every flag defaults to None: "not given, keep the file's value")
_FLAGS = ("folder", "osc_host", "osc_port", "reply_port", "allow", "oscquery_port", "mdns", "model", "backend", "device", "precision",
          "rate", "format", "pool_size", "pool_categories", "max_per_category", "batch_size", "queue_limit",
          "steps", "sampler", "guidance", "tail_gate", "band_limit", "seconds", "seed", "live", "midi_port", "audio_device")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the resident companion: model loaded, OSC server, pre-render pool, watched folder",
        description=textwrap.fill("Keep a model loaded and answer OSC requests with new samples in the output "
                                  f"folder. Settings come from {settings_path()} (or --config), then these flags."),
        epilog=_settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="settings file, .toml or .json (default: the one above)")
    p.add_argument("--save-settings", action="store_true", help="write the settings in effect back to the file")
    p.add_argument("--folder", help="output folder the DAW browses (default <Music>/dd-companion)")
    p.add_argument("--osc-host", help="address to listen on (default 127.0.0.1; others need --allow)")
    p.add_argument("--osc-port", type=int, help="UDP port to listen on (default 9000; 0 = any free port)")
    p.add_argument("--reply-port", type=int, help="send replies to this port on the sender's host")
    p.add_argument("--allow", nargs="+", metavar="CIDR", help="clients allowed when listening on the network")
    p.add_argument("--oscquery-port", type=int, metavar="PORT", help="TCP port of the OSCQuery namespace (HTTP, "
                   "on the OSC host; default: the OSC port + 1; 0 = any free port; -1 = off)")
    p.add_argument("--no-oscquery", dest="oscquery_port", action="store_const", const=-1,
                   help="do not serve the OSCQuery namespace")
    p.add_argument("--mdns", action=argparse.BooleanOptionalAction, help="advertise OSC and OSCQuery over mDNS "
                   "(default: only when listening beyond loopback)")
    p.add_argument("--model", "-m", help="model name or path (default: the shipped default model)")
    p.add_argument("--backend", choices=BACKENDS, help="runtime (default auto)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), help="torch precision")
    p.add_argument("--rate", type=int, help="output sample rate (default: the model's)")
    p.add_argument("--format", choices=("pcm24", "float"), help="WAV sample format (default pcm24)")
    p.add_argument("--pool-size", type=int, help="samples kept pre-rendered per category (default 2; 0 = off)")
    p.add_argument("--pool-categories", nargs="+", metavar="CATEGORY", help="categories to pre-render (default all)")
    p.add_argument("--max-per-category", type=int, help="auto-fill: keep at most M companion files per category")
    p.add_argument("--batch-size", type=int, help="most samples per batch (default 0 = auto: 1 on CPU, 4 on GPU)")
    p.add_argument("--queue-limit", type=int, help="most live jobs queued or running (default 16)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the sampler's own)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help=f"sampler (default: the model's recommended one, else {DEFAULT_SAMPLER})")
    p.add_argument("--guidance", type=float, metavar="W", help=f"classifier-free guidance scale, 1..{MAX_GUIDANCE:g} "
                   "(1 = none; default: the model's recommendation)")
    p.add_argument("--tail-gate", type=float, metavar="DB", help="tail gate threshold in dB under a sound's loudest "
                   "10 ms, -120..-10 (0 = off; default: the model's recommendation)")
    p.add_argument("--band-limit", type=int, choices=(0, 1), help="1 filters new samples to their category's "
                   "band (the model's low and high cut), 0 = off (default: on where the model has them)")
    p.add_argument("--seconds", type=float, help="length of new samples (default: the model's window)")
    p.add_argument("--seed", type=int, help="seed when a request names none (default -1 = random)")
    p.add_argument("--midi", dest="midi_port", metavar="PORT", help="MIDI input port (name prefix; implies "
                   "--live); with --live and no --midi, a virtual port 'DD Companion' is created")
    p.add_argument("--audio", dest="audio_device", metavar="DEVICE", help="audio output device name for pads "
                   "and audition (implies --live; see 'dd-companion devices'; default: the system default)")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, help="start MIDI pads and live audio "
                   "(settings key live = 1; the pad map is the file's [pads] table); --no-live: do not")
    p.set_defaults(run=run)


def _settings_help() -> str:
    """Every key of the settings file, its default and meaning, for the end of ``serve --help``."""
    lines = ["settings file keys (TOML or JSON; a flag given overrides the file; unset keys are left out):"]
    for key, default, meaning in describe():
        shown = "unset" if default is None else json.dumps(list(default) if isinstance(default, tuple) else default)
        lines.append(textwrap.fill(f"{key} = {shown}: {meaning}", 79, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The config file's settings with the flags that were given applied on top.

    ``--midi`` and ``--audio`` imply ``--live`` (live = 1) unless ``--no-live`` is given."""
    settings = load_settings(args.config, must_exist=args.config is not None and not args.save_settings)
    values = {key: getattr(args, key) for key in _FLAGS if getattr(args, key) is not None}
    if "mdns" in values:
        values["mdns"] = int(values["mdns"])
    if "live" in values:
        values["live"] = int(values["live"])
    elif args.midi_port is not None or args.audio_device is not None:
        values["live"] = 1
    return settings.updated(values)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.save_settings:
        print(f"settings saved to {save_settings(settings, args.config)}", flush=True)
    try:
        companion = Companion(settings, settings_file=args.config)
    except ValueError as exc:  # e.g. a network address without an allow-list (OscServer explains)
        print(f"dd-companion serve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            companion.start()
        except (OutputError, OSError) as exc:
            companion.stop()
            print(f"dd-companion serve: error: {exc}", file=sys.stderr, flush=True)
            return 2
        except BaseException:
            companion.stop()
            raise
        for line in companion.describe():
            print(f"dd-companion serve: {line}", flush=True)
        print("dd-companion serve: ready (Ctrl-C or SIGTERM to stop)", flush=True)
        while not stop.wait(0.5):
            pass
        companion.stop()
        print("dd-companion serve: stopped", flush=True)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

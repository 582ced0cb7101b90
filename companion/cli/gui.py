"""``dd-companion gui``: the desktop window on the same companion ``serve`` runs (settings file included).

The window always runs the live rig (pads, MIDI input, audio output); everything else comes from the
settings file and the flags, exactly as for ``serve``. ``--screenshot PATH`` renders the window
offscreen, once the pads hold fresh samples, to a PNG and exits. Qt is imported only here, when the
command runs, so the rest of the command line works without PySide6.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.backend import BACKENDS


def register(sub: argparse._SubParsersAction) -> None:
    from companion.cli.serve import _FLAGS

    p = sub.add_parser("gui", help="open the desktop window: pads, generation controls, history, settings",
                       description="Open the companion's window. It runs the same companion as 'serve' (model, "
                       "OSC, watched folder) plus the pads, MIDI input and audio output, with the same settings file.")
    p.set_defaults(**{key: None for key in _FLAGS}, save_settings=False)
    p.add_argument("--config", type=Path, help="settings file, .toml or .json (default: the one 'serve' uses)")
    p.add_argument("--model", "-m", help="model name or path (default: the settings', else the shipped model)")
    p.add_argument("--folder", help="output folder the DAW browses")
    p.add_argument("--osc-port", type=int, help="UDP port for OSC (0 = any free port)")
    p.add_argument("--oscquery-port", type=int, metavar="PORT", help="TCP port of the OSCQuery namespace (default: "
                   "the OSC port + 1; -1 = off)")
    p.add_argument("--backend", choices=BACKENDS, help="runtime (default auto)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--midi", dest="midi_port", metavar="PORT", help="MIDI input port (name prefix; default: a "
                   "virtual port 'DD Companion')")
    p.add_argument("--audio", dest="audio_device", metavar="DEVICE", help="audio output device (default: the "
                   "system default)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the sampler's own)")
    p.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance scale, 1 = none (default: "
                   "the model's recommendation)")
    p.add_argument("--tail-gate", type=float, metavar="DB", help="tail gate threshold in dB under a sound's loudest "
                   "10 ms, -120..-10 (0 = off; default: the model's recommendation)")
    p.add_argument("--band-limit", type=int, choices=(0, 1), help="1 filters new samples to their category's "
                   "band (the model's low and high cut), 0 = off (default: on where the model has them)")
    p.add_argument("--screenshot", type=Path, metavar="PATH", help="render the window with freshly generated "
                   "pads offscreen to this PNG, then exit")
    p.add_argument("--or-serve", action="store_true", help="with no display (or no PySide6), run the headless "
                   "'serve' instead, saying so ('make run' uses this)")
    p.add_argument("--wait", type=float, default=300.0, help="with --screenshot: most seconds to wait for the "
                   "pads (default 300)")
    p.set_defaults(run=run)


def has_display() -> bool:
    """Whether a window can be shown: always on macOS and Windows; on Linux and BSDs an X11 or
    Wayland display (or a Qt platform chosen explicitly, such as offscreen)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def run(args: argparse.Namespace) -> int:
    from companion.cli import serve as cmd_serve
    from companion.cli.serve import settings_from_args
    from companion.service.resident import Companion

    if args.or_serve and args.screenshot is None and not has_display():
        print("dd-companion gui: no display found (DISPLAY and WAYLAND_DISPLAY are unset): starting the headless "
              "companion instead (dd-companion serve)", flush=True)
        return cmd_serve.run(args)
    try:
        from gui import app
    except ImportError as exc:
        if args.or_serve and args.screenshot is None:
            print(f"dd-companion gui: the window needs PySide6 ({exc}): starting the headless companion "
                  "instead (dd-companion serve)", flush=True)
            return cmd_serve.run(args)
        print(f"dd-companion gui: error: the window needs PySide6 ({exc}); install it with "
              "pip install 'dd-companion[gui]', or run the headless 'dd-companion serve'", file=sys.stderr)
        return 2
    from_file = settings_from_args(args)
    settings = from_file.updated({"live": 1})
    if args.screenshot is not None and args.osc_port is None:
        settings = settings.updated({"osc_port": 0})  # never collide with a running companion
    try:
        companion = Companion(settings, settings_file=args.config)
    except ValueError as exc:
        print(f"dd-companion gui: error: {exc}", file=sys.stderr)
        return 2
    return app.run(companion, args.config, screenshot=args.screenshot, wait=args.wait,
                   keep={"live": from_file.live})

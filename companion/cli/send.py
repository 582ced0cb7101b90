"""``dd-companion send ADDRESS [ARG …]``: one OSC message to a running companion, for scripts and tests.

A thin wrapper over :func:`osc_protocol.client.send_command`; the port defaults to ``osc_port`` of the
settings file, so a companion started with the same settings is found without flags.
"""

from __future__ import annotations

import argparse

from companion.config.settings import load_settings
from models.errors import DDError
from osc_protocol.client import send_command
from osc_protocol.table import DEFAULT_PORT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "send", help="send one OSC message to a running companion",
        description="Send one OSC message (e.g. /dd/generate kick 4 -1). ARGs are ints, floats or strings by "
        "their look; prefix s:, i: or f: to force a type (s:808). Exit status: 0 sent or done, 1 /dd/error "
        "reply, 2 bad usage, 3 no reply in time, 4 network refused.",
    )
    p.add_argument("--host", help="companion host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="companion OSC port (default: osc_port of the settings file, else 9000)")
    p.add_argument("--wait", action="store_true", help="print the replies until the final one")
    p.add_argument("--timeout", type=float, help="seconds to wait with --wait (default 120)")
    p.add_argument("address", help="OSC address, e.g. /dd/generate")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="arguments, e.g. kick 4 -1")
    p.set_defaults(run=run)


def default_port() -> int:
    """``osc_port`` of the settings file when it is readable and not 0 (any port), else the protocol default."""
    try:
        port = load_settings().osc_port
    except DDError:
        return DEFAULT_PORT
    return port or DEFAULT_PORT


def run(args: argparse.Namespace) -> int:
    argv = ["--port", str(args.port if args.port is not None else default_port())]
    if args.host is not None:
        argv += ["--host", args.host]
    if args.timeout is not None:
        argv += ["--timeout", str(args.timeout)]
    if args.wait:
        argv.append("--wait")
    return send_command([*argv, args.address, *args.args])

"""The ``dd-companion`` command line: one sub-command per module, errors printed as one clear line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from models.errors import DDError

COMMANDS = (
    "companion.cli.generate",
    "companion.cli.models",
    "companion.cli.export",
    "companion.cli.train",
    "companion.cli.serve",
    "companion.cli.send",
    "companion.cli.devices",
    "companion.cli.gui",
    "companion.cli.pack",
)


class _Version(argparse.Action):
    """``--version``: worked out only when asked (it reads the model file), then exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from companion.cli.about import version_text

        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dd-companion",
        description="Dance Diffusion companion: fresh one-shots and loops for your DAW.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action=_Version, help="print the version, the model and the runtime, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.run(args) or 0)
    except DDError as exc:
        print(f"dd-companion: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dd-companion: interrupted", file=sys.stderr)
        return 130

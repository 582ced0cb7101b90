"""``dd-companion pack SPEC``: a sample pack (and a kit) from a TOML spec, resumable, here or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from companion.pack.kit import KITS
from companion.pack.runner import make_pack
from companion.pack.spec import load_spec
from models.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="render a sample pack (and a sampler kit) from a TOML spec",
                       description="Render every sound of a pack spec (see docs/packs.md and examples/pack.toml) "
                                   "into its folder with a manifest.json. Stopped at any point, it resumes where "
                                   "it was; run again on a finished pack, it does nothing.")
    p.add_argument("spec", type=Path, help="the pack spec (.toml)")
    p.add_argument("--kit", choices=KITS, help="also write a kit a sampler loads: an SFZ instrument or a Decent "
                                               "Sampler preset, in the pack folder")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="render on a Ray cluster: its address (host:port or ray://host:port), or 'auto' (a running "
                        "cluster, else a local one on this machine's cores); needs pip install 'dd-companion[ray]'")
    p.add_argument("--workers", type=int, help="Ray workers (default: the cluster's CPUs / the spec's threads)")
    p.add_argument("--chunk", type=int, default=4, help="sounds per Ray task (default 4)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.chunk < 1 or args.chunk > 1000:
        raise ConfigError(f"--chunk must be in 1..1000, got {args.chunk}")
    if args.workers is not None and not 1 <= args.workers <= 10000:
        raise ConfigError(f"--workers must be in 1..10000, got {args.workers}")
    if (args.workers is not None or args.chunk != 4) and not args.ray:
        raise ConfigError("--workers and --chunk are for a Ray run; add --ray auto or --ray ADDRESS")
    spec = load_spec(args.spec)
    summary = make_pack(spec, kit=args.kit, ray=args.ray, workers=args.workers, chunk=args.chunk,
                        stream=None if args.quiet else sys.stderr)
    for line in summary.lines():
        print(line)
    return 0

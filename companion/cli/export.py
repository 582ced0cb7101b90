"""``dd-companion export``: a model's weights to a verified ONNX file for the light ONNX Runtime runtime.

Needs the torch extra; torch is imported only when the command runs, so the light install can still
list every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (verified against torch)",
                       description="Export a model to ONNX, then check it with the ONNX checker and against torch "
                                   "on seeded inputs at two lengths and two batch sizes. Needs torch.")
    p.add_argument("--model", "-m", default="default",
                   help="weights to export: a path, an installed name, or 'default' (the shipped model)")
    p.add_argument("--out", "-o", type=Path,
                   help="ONNX file to write (default: models/default/dd-default.onnx for the default model, "
                        "else ./<name>.onnx)")
    p.add_argument("--fp16", action="store_true", help="half-precision weights and activations, for GPUs")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset (default 20: native Gelu in ONNX Runtime)")
    p.add_argument("--tolerance", type=float,
                   help="max abs difference allowed against torch (default 1e-4 for fp32, 2e-2 for fp16)")
    p.add_argument("--exporter", choices=("auto", "legacy", "dynamo"), default="auto",
                   help="torch exporter (default auto: legacy for fp32, several times faster to export than dynamo "
                        "for the same graph speed; dynamo for fp16, which legacy would trace at CPU fp16 speed)")
    p.add_argument("--model-rate", type=int, help="sample rate of a Harmonai .ckpt not in the known table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx") is None:
        raise ConfigError("export needs torch and onnx, which are not installed; install the torch extra "
                          "(pip install 'dd-companion[torch]')")
    dynamo = args.exporter == "dynamo" or (args.exporter == "auto" and args.fp16)
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("the dynamo exporter needs onnxscript (pip install onnxscript); "
                          "or use the default --exporter legacy")
    from export.onnx_export import export_model_file

    report = export_model_file(args.model, args.out, sample_rate=args.model_rate,
                               precision="fp16" if args.fp16 else "fp32", opset=args.opset,
                               exporter=args.exporter, tolerance=args.tolerance)
    print(report.summary())
    return 0

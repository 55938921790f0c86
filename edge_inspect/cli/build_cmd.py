"""``edge-inspect build``: compile the model folder's ONNX graphs into verified TensorRT engines (on the device)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="build TensorRT engines for a model folder (run on the target device)",
        description="Parse each ONNX graph with the TensorRT ONNX parser, build one engine per graph, verify it "
                    "against ONNX Runtime and record it in the model folder's manifest. Engines are cached by a "
                    "key over ONNX, TensorRT version, GPU, precision and options: an unchanged model is not rebuilt.",
    )
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR", help="exported model folder")
    p.add_argument("--precision", choices=["fp16", "fp32", "int8"], default="fp16",
                   help="fp16 (default; score/normalisation layers stay FP32), fp32, or int8 (explicit Q/DQ in the "
                        "ONNX only)")
    p.add_argument("--dla-core", type=int, default=None, metavar="N", help="run on DLA core N (GPU fallback on)")
    p.add_argument("--workspace-mb", type=int, default=1024, metavar="M", help="builder workspace limit (MiB)")
    p.add_argument("--max-batch", type=int, default=1, metavar="B",
                   help="largest batch the engines accept (profile min 1, opt = max = B; default 1)")
    p.add_argument("--fp32-graph", action="append", default=[], metavar="NAME",
                   help="build this graph entirely in FP32 inside an fp16 build (repeatable)")
    p.add_argument("--precision-constraints", choices=["obey", "prefer"], default="obey",
                   help="how firmly TensorRT keeps the FP32-pinned layers in FP32 (default obey)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached engines are up to date")
    p.add_argument("--verify-images", type=Path, default=None, metavar="DIR",
                   help="real images for the TensorRT vs ONNX Runtime check (default: synthetic images)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_inspect.manifest import load_manifest

    load_manifest(args.model)  # a broken model folder is reported before the device is probed
    from engines.cache import BuildOptions  # the converter package, imported on demand
    from engines.env import require_build_environment

    options = BuildOptions(
        precision=args.precision, dla_core=args.dla_core, workspace_mb=args.workspace_mb, max_batch=args.max_batch,
        precision_constraints=args.precision_constraints, fp32_graphs=tuple(args.fp32_graph),
    )
    env = require_build_environment()
    from engines.builder import build_model

    report = build_model(args.model, options, force=args.force, verify_images=args.verify_images, env=env.device)
    print(f"engines for {env.device.gpu_name} (compute {env.device.compute_capability}), "
          f"TensorRT {env.device.tensorrt_version}, {options.precision}:")
    print(f"  {'graph':<16} {'status':<7} {'MiB':>7} {'build s':>8} {'max err':>10} {'atol/rtol':>14}  file")
    for rec in report.records:
        size = (Path(args.model) / rec.file).stat().st_size / 2**20
        status = "built" if rec.graph in report.rebuilt else "cached"
        tol = f"{rec.tolerance.get('atol', 0):g}/{rec.tolerance.get('rtol', 0):g}"
        print(f"  {rec.graph:<16} {status:<7} {size:>7.2f} {rec.build_seconds:>8.1f} "
              f"{rec.max_abs_error or 0:>10.3g} {tol:>14}  {rec.file}")
    for name, err in sorted(report.end_to_end.items()):
        print(f"  end to end '{name}': max abs error {err:.3g} vs ONNX Runtime")
    return 0

"""``edge-inspect bench --model DIR``: model-only vs end-to-end pipeline throughput on the same frames."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="model-only vs pipeline throughput, latency and memory",
        description="Measure backend.infer in a loop on preprocessed frames (model only) against the whole "
        "pipeline (lossless mode, in-memory source of the same frames, null publisher). Targets: pipeline >= 95 % "
        "of model-only throughput, p99 latency <= 1.5x median.",
    )
    p.add_argument("--model", metavar="MODEL_DIR", required=True, help="exported model folder")
    p.add_argument("--frames", type=int, default=200, metavar="N", help="frames per measurement (default 200)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto")
    p.add_argument("--image-size", metavar="HxW", help="camera image size (default: the model input size)")
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--queue-size", type=int, default=4, metavar="N", help="pipeline queue depth (default 4)")
    p.add_argument("--rounds", type=int, default=3, metavar="N",
                   help="alternate model-only and pipeline measurements N times (default 3; evens out load changes)")
    p.add_argument("--compare", metavar="MODEL_DIR",
                   help="a second model folder (e.g. the INT8 one): model-only latency and resident memory of both, "
                   "side by side (each in its own process, the same frames, rounds interleaved); no pipeline run")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    p.set_defaults(func=bench)


def parse_hw(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--image-size must look like 480x640 (height x width), got {text!r}") from exc
    if h < 8 or w < 8:
        raise ConfigError(f"--image-size {text}: both sides must be at least 8 pixels")
    return h, w


def bench(args) -> int:
    from ..pipeline.bench import run_bench

    if args.frames < 10:
        raise ConfigError("--frames must be at least 10")
    if not 1 <= args.rounds <= args.frames // 5:
        raise ConfigError("--rounds must be between 1 and frames / 5")
    if args.compare:
        return _compare(args)
    result = run_bench(args.model, frames=args.frames, backend=args.backend, image_hw=parse_hw(args.image_size),
                       threads=args.threads, queue_size=args.queue_size, rounds=args.rounds)
    if args.json:
        print(json.dumps({**asdict(result), "ratio": result.ratio}, indent=2))
    else:
        print(result.table())
    return 0


def _compare(args) -> int:
    from pathlib import Path

    from ..manifest import load_manifest
    from ..pipeline.bench import bench_images
    from ..pipeline.compare import compare_models, table
    from ..preprocess import preprocess

    first, second = load_manifest(args.model), load_manifest(args.compare)
    if (first.input.height, first.input.width) != (second.input.height, second.input.width):
        raise ConfigError("--model and --compare take different input sizes; compare models of one size")
    spec = first.input
    hw = parse_hw(args.image_size) or (spec.height, spec.width)
    frames = [preprocess(img, spec) for img in bench_images(*hw)]
    labels = [Path(args.model).resolve().name, Path(args.compare).resolve().name]
    if labels[0] == labels[1]:
        labels = [f"1:{labels[0]}", f"2:{labels[1]}"]
    per_round = max(len(frames), args.frames // args.rounds)
    per_round -= per_round % len(frames)
    figures = compare_models({labels[0]: args.model, labels[1]: args.compare}, frames * (per_round // len(frames)),
                             rounds=args.rounds, backend=args.backend, threads=args.threads)
    if args.json:
        print(json.dumps([{**asdict(f), "median_ms": f.percentile(50), "p99_ms": f.percentile(99)}
                          for f in figures], indent=2))
    else:
        print(table(figures, hw))
    return 0

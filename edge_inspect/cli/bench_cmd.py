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
    result = run_bench(args.model, frames=args.frames, backend=args.backend, image_hw=parse_hw(args.image_size),
                       threads=args.threads, queue_size=args.queue_size, rounds=args.rounds)
    if args.json:
        print(json.dumps({**asdict(result), "ratio": result.ratio}, indent=2))
    else:
        print(result.table())
    return 0

"""Pipeline benchmark script: model-only vs end-to-end throughput (same code as ``edge-inspect bench``).

    python benchmarks/pipeline.py --model MODEL_DIR [--frames 200] [--image-size 480x640] [--repeat 3]
    python benchmarks/pipeline.py --tiny 256            # a generated tiny model (test fixture, needs onnx)

Run from the repository root. Real figures need a real exported model; the tiny model only shows
the pipeline's own overhead (its inference takes well under a millisecond).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.cli.bench_cmd import parse_hw
from edge_inspect.pipeline.bench import run_bench


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="exported model folder")
    src.add_argument("--tiny", type=int, metavar="SIZE", help="generate the tiny test model at SIZE x SIZE")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    ap.add_argument("--image-size", help="camera image HxW (default: model input size)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--queue-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="alternating model-only / pipeline rounds per run")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the measurement (figures vary on a busy host)")
    ap.add_argument("--json", metavar="FILE", help="also write all runs as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if args.tiny:
            from tests.fixtures.tiny_model import make_tiny_model

            model_dir = make_tiny_model(Path(tmp) / "tiny", size=args.tiny)
        runs = []
        for i in range(args.repeat):
            result = run_bench(model_dir, frames=args.frames, backend=args.backend,
                               image_hw=parse_hw(args.image_size), threads=args.threads, queue_size=args.queue_size,
                               rounds=args.rounds)
            print(f"--- run {i + 1}/{args.repeat}\n{result.table()}")
            runs.append({**asdict(result), "ratio": result.ratio})
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The line graph against the chain, on the product's own backend: one fused session cut to score + map vs
the five per-graph sessions, with and without the diagnostic outputs, and the thread-spinning option.

Every variant is an ``OnnxRuntimeBackend`` (the product's session options), timed in the same process on the
same frames, in interleaved rounds (a change in machine load hits all alike). It also checks that every
variant gives the chain's score and anomaly map.

  python benchmarks/line_graph.py --model MODEL_DIR [--frames 200] [--rounds 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.backends import onnxrt
from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.bench import bench_images
from edge_inspect.preprocess import preprocess


def _spinning_options(ort, threads=None):
    """The product's options with thread spinning left on (ONNX Runtime's default), for the A/B."""
    opts = PRODUCT_OPTIONS(ort, threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return opts


PRODUCT_OPTIONS = onnxrt.session_options
VARIANTS = {  # name: (fuse, diagnostics, spinning)
    "fused, score+map (product)": (True, False, False),
    "fused, all outputs": (True, True, False),
    "fused, score+map, spinning": (True, False, True),
    "chain of graphs, all outputs": (False, True, False),
    "chain of graphs, spinning": (False, True, True),
}


def load(model_dir: Path, fuse: bool, diagnostics: bool, spinning: bool) -> OnnxRuntimeBackend:
    onnxrt.session_options = _spinning_options if spinning else PRODUCT_OPTIONS
    try:
        be = OnnxRuntimeBackend(model_dir, load_manifest(model_dir), fuse=fuse, diagnostics=diagnostics)
        be.load()
    finally:
        onnxrt.session_options = PRODUCT_OPTIONS
    return be


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=200, help="timed frames per variant")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    model = Path(args.model)
    m = load_manifest(model)
    xs = [preprocess(img, m.input) for img in bench_images(m.input.height, m.input.width)]
    feed = m.input.name
    backends = {name: load(model, *v) for name, v in VARIANTS.items()}
    ref = backends["chain of graphs, all outputs"].infer({feed: xs[0]})
    diffs = {}
    for name, be in backends.items():
        out = be.infer({feed: xs[0]})
        diffs[name] = max(float(np.max(np.abs(out[k] - ref[k]))) for k in (m.score_output, m.map_output))
        for x in xs:
            be.infer({feed: x})
    samples: dict[str, list[float]] = {n: [] for n in backends}
    per_round = max(1, args.frames // args.rounds)
    for _ in range(args.rounds):
        for name, be in backends.items():
            for i in range(per_round):
                t0 = time.perf_counter()
                be.infer({feed: xs[i % len(xs)]})
                samples[name].append((time.perf_counter() - t0) * 1000.0)
    res = {n: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
               "p99_ms": float(np.percentile(v, 99)), "max_abs_diff_vs_chain": diffs[n], "mode": backends[n].mode}
           for n, v in samples.items()}
    print(f"{m.model_id}, input {m.input.height}x{m.input.width}, batch 1, {per_round * args.rounds} frames per "
          f"variant in {args.rounds} interleaved rounds")
    print(f"{'variant':<32}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}{'max |diff| vs chain':>21}")
    for n, r in res.items():
        print(f"{n:<32}{r['median_ms']:>10.2f}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_abs_diff_vs_chain']:>21.3g}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Float vs INT8 (Q/DQ) on an MVTec-format category: accuracy with the same scorer, and latency side by side.

Quantizes the float model folder (``edge_inspect.quantize``; skipped when ``--int8`` already holds a model),
scores the category's test set through both with ``benchmarks/quality.score_test_set`` (ONNX Runtime), and
prints image AUROC, pixel AUROC and, at each model's own operating point (its manifest image threshold), the
false-reject and escape rates. Then times ``infer`` of both on the same frames, interleaved in rounds in one
process (a change in machine load hits both alike). Writes OUT/int8_quality.json.

  python benchmarks/int8_quality.py --float /tmp/mt/model --int8 /tmp/mt/model-int8 \
      --data ../shared/data --category magnetic_tile --goods TRAIN_GOODS --threshold-goods HELD_OUT_GOODS

Thresholds: the INT8 model's are set on INT8 scores of ``--threshold-goods`` (edge_inspect.quantize). For a
like-for-like escape rate the float model is also recalibrated the same way on the same goods (row
"float, recalibrated"); the row "float, as exported" uses the export's cross-fitted threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import score_test_set

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.data.mvtec import good_images, load_image
from edge_inspect.evaluation import metrics as M
from edge_inspect.evaluation.calibration import calibrate
from edge_inspect.evaluation.recalibrate import score_images
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.bench import bench_images
from edge_inspect.preprocess import preprocess
from edge_inspect.quantize import QUANTIZE_GRAPHS, quantize


def validation_rows(fdir: Path, qdir: Path, goods: list[Path], seed: int = 7919) -> dict:
    """Float and INT8 on a set that holds no test image: the held-out goods and one validation anomaly
    made on each (trainer.validation_anomalies, the families the discriminator never trained on). What
    a choice between quantization variants can be made on without looking at the test set."""
    from edge_inspect.evaluation.scoring import _resize_mask
    from trainer.validation_anomalies import ValidationAnomalies

    gen = ValidationAnomalies(seed=seed)
    goods_rgb = [load_image(f) for f in goods]
    made = [gen(im) for im in goods_rgb]
    images = goods_rgb + [m[0] for m in made]
    labels = np.repeat([0, 1], len(goods_rgb))
    masks = [np.zeros(im.shape[:2], bool) for im in goods_rgb] + [m[1] > 0 for m in made]
    rows = {"goods": len(goods_rgb), "families": sorted({m[2] for m in made})}
    for name, d in (("float", fdir), ("int8", qdir)):
        m = load_manifest(d)
        with OnnxRuntimeBackend(d, m) as be:
            s, maps = score_images(be, m, images)
        maps = list(maps)
        fitted = [_resize_mask(k, a.shape) for k, a in zip(masks, maps, strict=True)]  # maps may be model-sized
        rows[name] = {"image_auroc": M.image_auroc(labels, s), "pixel_auroc": M.pixel_auroc(fitted, maps)}
    return rows


def interleaved_latency(dirs: dict[str, Path], frames: int = 100, rounds: int = 5) -> dict[str, dict]:
    """Median / p90 / p99 ms of ``infer`` (line graph, batch 1) per model, the same frames, interleaved."""
    backends = {}
    for name, d in dirs.items():
        m = load_manifest(d)
        backends[name] = (OnnxRuntimeBackend(d, m), m)
        backends[name][0].load()
    spec = next(iter(backends.values()))[1].input
    xs = [preprocess(img, spec) for img in bench_images(spec.height, spec.width)]
    samples: dict[str, list[float]] = {n: [] for n in backends}
    for be, m in backends.values():
        for x in xs:
            be.infer({m.input.name: x})
    for _ in range(rounds):
        for name, (be, m) in backends.items():
            for i in range(frames // rounds):
                t0 = time.perf_counter()
                be.infer({m.input.name: xs[i % len(xs)]})
                samples[name].append((time.perf_counter() - t0) * 1000.0)
    for be, _ in backends.values():
        be.close()
    return {n: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
                "p99": float(np.percentile(v, 99)), "n": len(v)} for n, v in samples.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float", dest="float_dir", required=True, help="float model folder")
    ap.add_argument("--int8", dest="int8_dir", required=True, help="INT8 model folder (made when absent)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--goods", help="goods for the activation ranges (default: DATA/CATEGORY/train)")
    ap.add_argument("--threshold-goods", help="held-out goods to set both models' thresholds on")
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--activations", default="u8-asymmetric")
    ap.add_argument("--graphs", default=",".join(QUANTIZE_GRAPHS), help="graphs to quantize, comma-separated")
    ap.add_argument("--max-images", type=int, default=32)
    ap.add_argument("--quantize-outputs", action="store_true", help="quantize the nodes computing graph outputs too")
    ap.add_argument("--frames", type=int, default=100, help="timed frames per model")
    ap.add_argument("--out", required=True, help="folder for int8_quality.json")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="more model folders (e.g. other INT8 variants) timed with the two, interleaved")
    ap.add_argument("--latency-only", action="store_true", help="only time the models (no quantizing, no scoring)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("root",):  # onnxruntime.quantization logs every weight scale it widens
        logging.getLogger(noisy).setLevel(logging.WARNING)
    fdir, qdir, out = Path(args.float_dir), Path(args.int8_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timed = {"float": fdir, "int8": qdir}
    for item in args.also:
        name, _, folder = item.partition("=")
        if not folder:
            ap.error(f"--also takes NAME=DIR, got {item!r}")
        timed[name] = Path(folder)
    if args.latency_only:
        lat = interleaved_latency(timed, frames=args.frames)
        (out / "latency.json").write_text(json.dumps(lat, indent=1))
        _print_latency(lat)
        return 0
    tgoods = good_images(args.threshold_goods) if args.threshold_goods else None
    t0 = time.time()
    if not (qdir / "manifest.json").is_file():
        files, source = good_images(args.goods or Path(args.data) / args.category / "train")
        r = quantize(fdir, files, source, qdir, method=args.method, activations=args.activations,
                     float_outputs=not args.quantize_outputs,
                     max_images=args.max_images, graphs=tuple(args.graphs.split(",")), threshold_goods=tgoods)
        print(f"quantized in {time.time() - t0:.0f} s; calibration images: max |score int8 - float| "
              f"{r.max_abs_score_diff:.4f} (float scores {r.float_scores.min():.3f}..{r.float_scores.max():.3f})")
    fm, qm = load_manifest(fdir), load_manifest(qdir)
    res: dict = {"float": str(fdir), "int8": str(qdir), "quantization": qm.quantization.model_dump()
                 if qm.quantization else None, "precision": {"float": fm.precision, "int8": qm.precision}}
    thresholds = {"float, as exported": (fdir, fm.calibration.image_threshold),
                  "int8": (qdir, qm.calibration.image_threshold)}
    if tgoods is not None:
        with OnnxRuntimeBackend(fdir, fm) as be:
            gs, gm = score_images(be, fm, (load_image(f) for f in tgoods[0]))
        cal = calibrate(gs, good_maps=gm, source=tgoods[1], score_lower_bound=fm.calibration.score_lower_bound,
                        map_lower_bound=fm.calibration.map_lower_bound)
        thresholds["float, recalibrated"] = (fdir, cal.image_threshold)
    if tgoods is not None:
        res["validation"] = validation_rows(fdir, qdir, tgoods[0])
    scored = {}
    for name, d in (("float", fdir), ("int8", qdir)):
        scores, maps, labels, masks, _, types = score_test_set(d, args.data, args.category)
        scored[name] = (np.asarray(scores["deployed"]), maps["fused"])
    rows = {}
    for name, (d, thr) in thresholds.items():
        s, maps = scored["int8" if d == qdir else "float"]
        op = M.rates_at_threshold(labels, s, thr)
        rows[name] = {"image_auroc": M.image_auroc(labels, s), "pixel_auroc": M.pixel_auroc(masks, maps),
                      "threshold": thr, "operating_point": op}
    res["rows"] = rows
    fs, qs = scored["float"][0], scored["int8"][0]
    res["score_shift"] = {"mean": float(np.mean(qs - fs)), "max_abs": float(np.max(np.abs(qs - fs))),
                          "corr": float(np.corrcoef(fs, qs)[0, 1])}
    res["latency_ms"] = interleaved_latency(timed, frames=args.frames)
    (out / "int8_quality.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"\n{args.category}: {len(labels)} test images ({int(labels.sum())} defective)")
    print(f"{'':<22}{'image AUROC':>12}{'pixel AUROC':>12}{'threshold':>11}{'FRR':>8}{'escape':>8}")
    for name, r in rows.items():
        op = r["operating_point"]
        print(f"{name:<22}{r['image_auroc']:>12.4f}{r['pixel_auroc']:>12.4f}{r['threshold']:>11.4f}"
              f"{op['false_reject_rate']:>8.3f}{op['escape_rate']:>8.3f}")
    if "validation" in res:
        v = res["validation"]
        print(f"validation (no test images: {v['goods']} held-out goods + one validation anomaly each): image AUROC "
              f"float {v['float']['image_auroc']:.4f}, int8 {v['int8']['image_auroc']:.4f}; pixel AUROC float "
              f"{v['float']['pixel_auroc']:.4f}, int8 {v['int8']['pixel_auroc']:.4f}")
    print(f"INT8 - float score: mean {res['score_shift']['mean']:+.4f}, max |.| {res['score_shift']['max_abs']:.4f}, "
          f"correlation {res['score_shift']['corr']:.5f}")
    _print_latency(res["latency_ms"])
    return 0


def _print_latency(latency: dict[str, dict]) -> None:
    for name, lat in latency.items():
        print(f"latency {name:<6} median {lat['median']:6.2f} ms  p90 {lat['p90']:6.2f}  p99 {lat['p99']:6.2f} "
              f"({lat['n']} frames, interleaved)")


if __name__ == "__main__":
    sys.exit(main())

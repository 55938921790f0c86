"""``edge-inspect export``: ONNX graphs + manifest.json from a training run."""

from __future__ import annotations

from ._lazy import import_trainer
from .train_cmd import DefaultsHelpFormatter, parse_sets


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run to a model folder (ONNX graphs + manifest)",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--run", required=True, metavar="RUN", help="training run folder (holds model.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    p.add_argument("--calibration-defects", metavar="DIR",
                   help="folder of labelled defective images (an MVTec test/ folder works: good/ is left out): "
                   "store the escape rate at the threshold and the F1-optimal threshold")
    p.add_argument("--target-frr", type=float, default=0.005, metavar="RATE",
                   help="false-reject rate of good parts the image threshold is set for (0.005 = 0.5 %%)")
    p.add_argument(
        "--head", action="append", default=[], metavar="KEY=VALUE",
        help="change how maps are combined without retraining: st_exponent (1 = paper's product, 0 = discriminator "
        "alone), map_sigma (smoothing, input pixels), score_topk, region_weight and global_weight (0 = the paper's "
        "map and score); 'auto' picks st_exponent, map_sigma and region_weight on validation (held-out goods + "
        "validation anomalies, never test images), other KEY=VALUE given with it win; 'fixed' keeps the run's "
        "values (default: the run's head_selection setting)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    export = import_trainer("export")
    modes = [h for h in args.head if h in ("auto", "fixed")]
    out = export.export(
        args.run, args.out, calibration_defects=args.calibration_defects, target_frr=args.target_frr,
        head_settings=parse_sets([h for h in args.head if h not in modes], "--head"),
        head_auto=(modes[-1] == "auto") if modes else None,
    )
    from ..manifest import load_manifest

    m = load_manifest(out)
    gm = sum(g.gmacs or 0 for g in m.graphs)
    print(f"exported {len(m.graphs)} graphs to {out} ({gm:.2f} GMACs per image)")
    v = m.provenance.validation
    if v:
        c, f = v["configured_figures"], v["selected_figures"]
        print(f"head chosen on validation ({v['validation_goods']} held-out goods + a validation anomaly each"
              f"{', shared with calibration' if v['shared_with_calibration'] else ''}): "
              + ", ".join(f"{k} {val:g}" for k, val in v["selected"].items())
              + f"; image/pixel AUROC {f['image_auroc']:.4f}/{f['pixel_auroc']:.4f}"
              + (f" (configured head: {c['image_auroc']:.4f}/{c['pixel_auroc']:.4f})" if c else ""))
        if v.get("within_noise"):
            print(f"  the two differ by less than one standard error of the image AUROC ({v['image_auroc_se']:.3f}):"
                  " validation cannot tell them apart")
    from ..evaluation.recalibrate import describe

    print(describe(m.calibration))
    return 0

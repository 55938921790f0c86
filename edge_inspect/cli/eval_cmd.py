"""``edge-inspect eval``: score an MVTec-format category with a model folder; metrics, predictions, report."""

from __future__ import annotations

import math
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model folder on an MVTec-format category",
        description="Score every test image of DATA/CATEGORY through the deployed backend and write "
        "metrics.json, predictions.jsonl and report.html (+ PNGs) into OUT.",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder (manifest.json + ONNX graphs)")
    p.add_argument("--data", required=True, type=Path, help="data root holding the category folder")
    p.add_argument("--category", required=True, help="category folder name under --data")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "torch"],
                   help="inference backend (default: onnxruntime, what runs on a CPU line; torch: the "
                   "trained model.pt through the trainer, needs the [train] extra)")
    p.add_argument("--threshold", type=float, default=None,
                   help="image threshold to judge OK/NG (default: the manifest's calibrated one)")
    p.add_argument("--batch-size", type=int, default=1, help="images per inference call (default 1)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2%}" if pct else f"{value:.4f}"


def _point(p: dict) -> str:
    """'threshold T: false rejects A, escapes B' for one operating point, or n/a with its reason."""
    if p["threshold"] is None:
        return f"n/a ({p['reason']})"
    return (f"threshold {p['threshold']:.6g}: false rejects {_fmt(p['false_reject_rate'], True)}, "
            f"escapes {_fmt(p['escape_rate'], True)}")


def _interval(iv) -> str:
    return "n/a" if iv is None else f"{iv[0]:.2%}-{iv[1]:.2%}"


def operating_point_lines(op: dict) -> list[str]:
    """The CLI summary of metrics.json's "operating_point" (all but the curve itself)."""
    c = op["confusion"]
    lines = [
        f"operating point ({op['decision_rule']}):",
        f"  at the threshold in force: {c['true_ok']} good OK, {c['false_reject']} false rejects, "
        f"{c['escape']} escapes, {c['caught']} defects caught",
        f"  escapes at 1% false rejects: {_point(op['escape_rate_at_1pct_false_rejects'])}",
        f"  false rejects at 0 escapes: {_point(op['false_reject_rate_at_zero_escapes'])}",
        f"  suggested thresholds, measured on {op['suggested_thresholds']['measured_on']} "
        "(for information only; set the line with 'edge-inspect calibrate' on good parts):",
    ]
    for p in op["suggested_thresholds"]["points"]:
        lines.append(f"    false rejects <= {p['target_false_reject_rate']:.1%}: {_point(p)}")
    cal = op.get("calibration")
    if cal is None:
        lines.append(f"  calibration check: skipped ({op.get('calibration_skipped')})")
    else:
        agree = {True: "agrees", False: "DISAGREES", None: "cannot tell"}[cal["consistent"]]
        lines.append(
            f"  calibration at {cal['threshold']:.6g}: expected false rejects "
            f"{_fmt(cal['expected_false_reject_rate'], True)} ({cal['confidence']:.0%} interval "
            f"{_interval(cal['expected_false_reject_interval'])}), measured on the test goods "
            f"{_fmt(cal['measured_false_reject_rate'], True)} "
            f"({cal['measured_false_rejects']}/{cal['good']}, "
            f"{_interval(cal['measured_false_reject_interval'])}): {agree}")
    return lines


def handle(args) -> int:
    from ..errors import ConfigError
    from ..evaluation.runner import evaluate

    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ConfigError(f"--threshold must be a finite number, got {args.threshold}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    backend = args.backend
    if backend == "torch":  # the runtime never imports the trainer: hand its backend in
        from ._lazy import torch_eval_backend

        backend = torch_eval_backend()
    m = evaluate(args.model, args.data, args.category, args.out, backend=backend,
                 batch_size=args.batch_size, threshold=args.threshold, progress=not args.no_progress,
                 report=not args.no_report)
    c = m["counts"]
    rows = [
        ("image AUROC", _fmt(m["image_auroc"])),
        ("pixel AUROC", _fmt(m["pixel_auroc"])),
        ("AUPRO (FPR<=30%)", _fmt(m["aupro_30"])),
        ("F1-max", _fmt(m["f1_max"])),
        ("threshold", f"{m['threshold']:.6g} ({m['threshold_source']})"),
        ("false-reject rate",
         f"{_fmt(m['false_reject_rate'], True)} ({m['false_rejects']}/{c['good']} good)"),
        ("escape rate", f"{_fmt(m['escape_rate'], True)} ({m['escapes']}/{c['defective']} defective)"),
        ("latency median/p99", f"{_fmt(m['latency_ms']['median'])} / {_fmt(m['latency_ms']['p99'])} ms"),
        ("images scored/skipped", f"{c['scored']}/{c['skipped']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{m['model_id']} on {m['category']} ({m['backend']})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    for name, info in m["per_defect_type"].items():
        print(f"  {'  ' + name:<{width}}  AUROC {_fmt(info['auroc'])}, "
              f"escapes {_fmt(info['escape_rate'], True)} "
              f"of {info['count']}")
    for line in operating_point_lines(m["operating_point"]):
        print(f"  {line}")
    for warning in (m.get("data_check") or {}).get("warnings", []):
        print(f"  data check: {warning}")
    if m.get("pixel_metrics_skipped"):
        print(f"  pixel metrics skipped: {m['pixel_metrics_skipped']}")
    for s in m["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    out = Path(args.out)
    print(f"metrics: {out / 'metrics.json'}; predictions: {out / 'predictions.jsonl'}")
    if m.get("report"):
        print(f"report: {out / m['report']}")
    return 0

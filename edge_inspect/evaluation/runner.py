"""Evaluate a model folder on an MVTec-format test set: metrics.json, predictions.jsonl and the report.

Output folder:
- ``metrics.json``      image/pixel metrics, rates at the threshold in force, the operating point
                        (false-reject vs escape curve, suggested thresholds, confusion counts, the
                        calibration's predicted false-reject rate next to the measured one), latency,
                        skipped files, and "data_check" (warnings when the data does not look like the
                        model's: greyscale vs colour, other image sizes, goods scoring above calibration)
- ``predictions.jsonl`` one line per scored image: path (relative to the category folder), score,
                        label ("ok"/"ng" at the threshold in force, by decision.Thresholds.label), truth,
                        and "score_parts" {"map", "global"} when the manifest has score_fusion
- ``report.html`` + PNGs, see report.py (needs matplotlib, the [eval] extra)

The jobs are split by module: scoring.py runs the images through the backend (what runs on the line),
metrics.py computes the numbers, datacheck.py compares the data with the model's, report.py draws and
writes the HTML; this module orchestrates them and writes the JSON files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..decision import Thresholds
from ..errors import ConfigError, DataError, require
from ..manifest import Calibration, Manifest, load_manifest, utc_now
from . import metrics as M
from .datacheck import check_data
from .report import WORST_K, worst_parts, write_report, writing
from .scoring import (
    BACKENDS,
    BackendFactory,
    Scored,
    open_backend,
    score_parts,
    score_samples,
    scoring_manifest,
)

__all__ = [  # what callers import from here (the functions live in their own modules)
    "BACKENDS", "WORST_K", "BackendFactory", "Scored", "compute_metrics", "evaluate", "open_backend",
    "operating_point", "score_parts", "score_samples", "scoring_manifest", "worst_parts", "write_report",
]

log = logging.getLogger(__name__)


def compute_metrics(scored: list[Scored], threshold: float, masks_available: bool) -> tuple[dict, dict]:
    """(metrics dict for metrics.json, curves for the report) from the scored images."""
    labels = np.array([s.label for s in scored], int)
    scores = np.array([s.score for s in scored], np.float64)
    types = [s.defect_type for s in scored]
    out: dict = {}
    curves: dict = {}

    try:
        out["image_auroc"] = M.image_auroc(labels, scores)
        out["f1_max"], out["f1_threshold"] = M.f1_max(labels, scores)
        curves["image_roc"] = M.image_roc(labels, scores)
        out["image_metrics_skipped"] = None
    except DataError as exc:
        out.update(image_auroc=None, f1_max=None, f1_threshold=None, image_metrics_skipped=str(exc))
        log.warning("eval: image AUROC/F1 skipped: %s", exc)

    rates = M.rates_at_threshold(labels, scores, threshold, types)
    out["false_reject_rate"] = rates["false_reject_rate"]
    out["escape_rate"] = rates["escape_rate"]
    out["false_rejects"] = rates["false_rejects"]
    out["escapes"] = rates["escapes"]
    per_type = {}
    good = labels == 0
    for name, r in rates["per_defect_type"].items():
        sel = good | np.array([t == name for t in types])
        auroc = M.image_auroc(labels[sel], scores[sel]) if good.any() else None
        per_type[name] = {"count": r["count"], "auroc": auroc, "escape_rate": r["escape_rate"],
                          "escapes": r["escapes"], "mean_score": float(scores[~good & sel].mean())}
    out["per_defect_type"] = per_type

    out.update(pixel_auroc=None, aupro_30=None, pixel_images=0)
    if not masks_available:
        out["pixel_metrics_skipped"] = "the category has no ground_truth masks; pixel metrics need them"
    else:
        usable = [s for s in scored if s.label == 0 or s.mask is not None]
        without = sum(1 for s in scored if s.label == 1 and s.mask is None)
        if without:
            log.warning("eval: %d defect images have no mask and are left out of the pixel metrics", without)
        masks = [s.mask if s.mask is not None else np.zeros(s.amap.shape, bool) for s in usable]
        maps = [s.amap for s in usable]
        try:
            out["pixel_auroc"] = M.pixel_auroc(masks, maps)
            pc = M.pixel_curves(masks, maps, max_fpr=M.MAX_FPR)
            out["aupro_30"] = M.aupro(masks, maps, max_fpr=M.MAX_FPR, curves=pc)
            curves["pixel"] = pc
            out["pixel_images"] = len(usable)
            out["pixel_metrics_skipped"] = None
            if without:
                out["pixel_metrics_note"] = f"{without} defect images without a mask left out"
        except DataError as exc:
            out["pixel_metrics_skipped"] = str(exc)
    if out.get("pixel_metrics_skipped"):
        log.warning("eval: pixel metrics skipped: %s", out["pixel_metrics_skipped"])
    return out, curves


def operating_point(scored: list[Scored], threshold: float, source: str, calibration: Calibration) -> dict:
    """The "operating_point" block of metrics.json (see metrics.operating_point_summary).

    Adds "threshold_source" and "calibration": when the manifest's calibration has a threshold_model,
    its expected false-reject rate and interval at its own threshold next to the rate measured on the
    test goods (see metrics.calibration_check), else None with "calibration_skipped" saying why.
    """
    labels = np.array([s.label for s in scored], int)
    scores = np.array([s.score for s in scored], np.float64)
    op = M.operating_point_summary(labels, scores, threshold)
    op["threshold_source"] = source
    tm = calibration.threshold_model
    if tm is None:
        op["calibration"] = None
        op["calibration_skipped"] = ("the manifest's calibration has no threshold_model "
                                     "(calibrated before schema 3)")
        return op
    check = M.calibration_check(labels, scores, calibration.image_threshold, tm.expected_frr, tm.frr_interval,
                                tm.confidence, calibration.escape_rate, calibration.escape_interval)
    check.update(target_false_reject_rate=tm.target_frr, calibration_n=tm.n, calibration_source=tm.source,
                 calibrated_at=tm.calibrated_at)
    op["calibration"] = check
    op["calibration_skipped"] = None
    if check["consistent"] is False:
        log.warning("eval: the test goods' false-reject rate %.2f %% at the calibrated threshold %.6g lies "
                    "outside the calibration's %.0f %% interval %.2f–%.2f %%",
                    100 * check["measured_false_reject_rate"],
                    calibration.image_threshold, 100 * tm.confidence, 100 * tm.frr_interval[0],
                    100 * tm.frr_interval[1])
    return op


def _score_parts_info(manifest: Manifest, scored: list[Scored]) -> dict | None:
    """metrics.json "score_parts": which output explains the score, and whether the backend gave it."""
    fusion = manifest.score_fusion
    if fusion is None:
        return None
    available = all(s.score_parts is not None for s in scored)
    reason = None if available else (f"the backend did not return a finite '{fusion.global_output}' for "
                                     "every image; predictions carry no score parts where it is missing")
    if reason:
        log.warning("eval: %s", reason)
    return {"global_output": fusion.global_output, "available": available, "reason": reason}


def _prediction(s: Scored, threshold: float) -> dict:
    """One predictions.jsonl record (score_parts only when the score is fused)."""
    rec = {"path": s.rel_path, "score": s.score, "label": M.label_at(s.score, threshold),
           "truth": s.defect_type}
    if s.score_parts is not None:
        rec["score_parts"] = s.score_parts
    return rec


def _counts(samples, scored: list[Scored], skipped: list[dict]) -> dict:
    per_type: dict[str, int] = {}
    for s in scored:
        per_type[s.defect_type] = per_type.get(s.defect_type, 0) + 1
    return {
        "images": len(samples),
        "scored": len(scored),
        "good": sum(1 for s in scored if s.label == 0),
        "defective": sum(1 for s in scored if s.label == 1),
        "skipped": len(skipped),
        "per_type": per_type,
    }


def evaluate(model_dir, data_root, category: str, out_dir, backend: str | BackendFactory = "onnxruntime",
             batch_size: int = 1, threshold: float | None = None, progress: bool = True,
             report: bool = True) -> dict:
    """Score ``<data_root>/<category>/test`` with the model and write metrics.json, predictions.jsonl
    and (``report``) report.html + PNGs into ``out_dir``. Returns the metrics dict.

    ``backend``: "onnxruntime" or "tensorrt", or a factory called as ``backend(model_dir, manifest=...)``
    that returns an unentered Backend (the CLI hands in the trainer's TorchBackend this way).
    ``threshold`` overrides the manifest's calibrated image threshold (checked by decision.Thresholds:
    finite, not below the model's lower bound; ConfigError otherwise). Raises DataError for an empty
    category or when no image could be scored; per-file problems are listed in "skipped".
    """
    from ..data.mvtec import MVTecCategory

    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    if report:  # fail before scoring, not after
        require("matplotlib", "eval", "the evaluation report (or skip it: --no-report)")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    manifest = load_manifest(model_dir)
    cat = MVTecCategory(data_root, category)
    samples = cat.test_samples(require_masks=False)
    masks_available = cat.has_masks()
    cal = manifest.calibration
    source = "manifest" if threshold is None else "override"
    threshold = Thresholds.from_manifest(manifest, image=threshold, source=source,
                                         image_what="threshold").image  # checked by the rule's owner

    be = open_backend(backend, model_dir, scoring_manifest(manifest))
    manifest = getattr(be, "manifest", None) or manifest
    backend_name = getattr(be, "name", None) or (backend if isinstance(backend, str) else type(be).__name__)
    log.info("eval: %d test images of %s with backend %s, threshold %.6g (%s)",
             len(samples), cat.path, backend_name, threshold, source)
    with be:
        scored, skipped, latency = score_samples(be, manifest, samples, batch_size, progress)
    if not scored:
        first = skipped[0]["reason"] if skipped else "no images"
        raise DataError(f"no test image of {cat.path} could be scored "
                        f"({len(skipped)} skipped; first: {first})")

    values, curves = compute_metrics(scored, threshold, masks_available)
    data_check = check_data([s.path for s in samples], [s.path for s in cat.train_samples()],
                            [s.score for s in scored if s.label == 0], manifest)
    result = {
        "model_id": manifest.model_id,
        "model_version": manifest.model_version,
        "backend": backend_name,
        "category": category,
        "data_root": str(data_root),
        "created_at": utc_now(),
        **values,
        "operating_point": operating_point(scored, threshold, source, cal),
        "score_parts": _score_parts_info(manifest, scored),
        "threshold": threshold,
        "threshold_source": source,
        "threshold_method": cal.image_threshold_method if source == "manifest" else "given by the caller",
        "manifest_threshold_f1": cal.image_threshold_f1,
        "pixel_threshold": cal.pixel_threshold,
        "decision_rule": M.DECISION_RULE,
        "latency_ms": latency,
        "counts": _counts(samples, scored, skipped),
        "skipped": skipped,
        "data_check": data_check,
        "report": None,
    }

    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / "predictions.jsonl"
    with writing(predictions_path), open(predictions_path, "w") as fh:  # close() may be what fails
        for s in scored:
            fh.write(json.dumps(_prediction(s, threshold)) + "\n")
    metrics_path = out_dir / "metrics.json"
    with writing(metrics_path):  # before the report: keep it if that fails
        metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    if report:
        result["report"] = write_report(out_dir, result, scored, curves).name
        with writing(metrics_path):
            metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("eval: wrote %s", metrics_path)
    return result

"""Score an MVTec-format test set through a deployed backend; write metrics, predictions and a report.

Output folder:
- ``metrics.json``      image/pixel metrics, rates at the threshold in force, the operating point
                        (false-reject vs escape curve, suggested thresholds, confusion counts, the
                        calibration's predicted false-reject rate next to the measured one), latency,
                        skipped files
- ``predictions.jsonl`` one line per scored image: path (relative to the category folder), score,
                        label ("ok"/"ng" at the threshold in force, NG when score > threshold), truth,
                        and "score_parts" {"map", "global"} when the manifest has score_fusion
- ``report.html`` + PNGs (ROC curves, false-reject vs escape curve, score histograms, heat-map
                        overlays), the HTML also embeds the PNGs so it can be mailed alone. Needs
                        matplotlib (the [eval] extra).

What is measured is what runs on the line: the same manifest input spec, ``preprocess`` and backend
(ONNX Runtime by default). The image is resized whole to the model input, so the score does not
depend on the original size or aspect ratio; ground-truth masks are resized (nearest) to the map.
"""

from __future__ import annotations

import base64
import html
import importlib
import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, DataError, DependencyError, require
from ..manifest import Calibration, Manifest, ScoreFusion, load_manifest, utc_now
from ..preprocess import preprocess
from . import metrics as M

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt", "torch")
WORST_K = 6  # heat-map overlays per group in the report
MAX_FPR = 0.3


@dataclass
class Scored:
    """One scored test image. ``amap`` (h, w) float32 at map size; ``mask`` (h, w) bool at map size,
    None for good images (all False) and for defect images without a mask file. ``score_parts``
    {"map", "global"} (score units, summing to ``score``) when the manifest has score_fusion, else None."""

    path: Path
    rel_path: str
    defect_type: str
    label: int
    mask_path: Path | None
    score: float
    amap: np.ndarray
    mask: np.ndarray | None
    score_parts: dict | None = None


# ---------------------------------------------------------------------------------------------
# scoring


def _open_backend(name: str, model_dir: Path, manifest: Manifest):
    if name not in BACKENDS:
        from ..errors import ConfigError

        raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    if name == "torch":
        try:
            module = importlib.import_module("trainer.evaluate_backend")
        except ImportError as exc:
            raise DependencyError(
                f"backend 'torch' needs trainer.evaluate_backend and torch (the [train] extra): {exc}"
            ) from exc
        return module.TorchBackend(model_dir)
    from ..backends.select import open_backend

    try:
        return open_backend(model_dir, name, manifest=manifest)
    except ImportError as exc:
        raise BackendError(f"backend '{name}' is not available here: {exc}") from exc


class _Progress:
    """tqdm when installed, else a log line every 10 s."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.last = total, 0, time.monotonic()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", desc="eval", file=sys.stderr)
            except ImportError:
                pass
        self.enabled = enabled

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (time.monotonic() - self.last > 10 or self.done == self.total):
            self.last = time.monotonic()
            log.info("eval: %d / %d images scored", self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def scoring_manifest(manifest: Manifest) -> Manifest:
    """The manifest to open the backend with: one that also asks for score_fusion's global output.

    Backends return only score, map and ``extra_outputs``; an export that fused the score but did not
    list its global output there would otherwise leave the score parts unexplained.
    """
    fusion = manifest.score_fusion
    if fusion is None or fusion.global_output in manifest.extra_outputs:
        return manifest
    return manifest.model_copy(update={"extra_outputs": [*manifest.extra_outputs, fusion.global_output]})


def score_parts(scores, global_scores, fusion: ScoreFusion) -> list[dict]:
    """Split fused image scores into the anomaly map's and the image-level Gaussian's contributions.

    scores (B,) image scores, global_scores (B,) the graph output ``fusion.global_output``. Returns B
    dicts {"map": score − global, "global": fusion.global_part(g)} in score units (they sum to the score).
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    g = np.asarray(global_scores, np.float64).reshape(-1)
    if s.shape != g.shape:
        raise DataError(f"{g.size} global scores for {s.size} image scores")
    parts = []
    for score, glob in zip(s, g, strict=True):
        global_part = float(fusion.global_part(float(glob)))
        parts.append({"map": float(score) - global_part, "global": global_part})
    return parts


def _batch_score_parts(out: dict, fusion: ScoreFusion | None, scores: np.ndarray) -> list[dict | None]:
    """score_parts for one inference batch ``out``; Nones when there is no fusion or its output is absent."""
    n = scores.size
    if fusion is None:
        return [None] * n
    g = out.get(fusion.global_output)
    if g is None or np.asarray(g).size != n or not np.isfinite(g).all():
        return [None] * n
    return score_parts(scores, g, fusion)


def score_samples(backend, manifest: Manifest, samples, batch_size: int = 1, progress: bool = True):
    """Run every sample through an entered backend.

    Returns (scored: list[Scored], skipped: list[{"path", "reason"}], latency: dict). A file that
    cannot be read, a mask of the wrong size or a non-finite score skips that image (logged).
    Latency per image is preprocess + inference (file decoding excluded), after one warm-up run.
    With ``manifest.score_fusion`` each Scored gets its score parts when the backend returns the global
    output (open the backend with scoring_manifest(manifest) so it does).
    """
    from ..data.mvtec import load_image, load_mask

    spec = manifest.input
    backend.infer({"image": np.zeros((1, 3, spec.height, spec.width), np.float32)})  # warm-up
    scored: list[Scored] = []
    skipped: list[dict] = []
    per_image_ms: list[float] = []
    infer_ms: list[float] = []
    pending: list[tuple] = []  # (sample, x, mask at original size, preprocess ms)
    bar = _Progress(len(samples), progress)

    def flush() -> None:
        if not pending:
            return
        batch = np.concatenate([p[1] for p in pending])
        t0 = time.perf_counter()
        out = backend.infer({"image": batch})
        dt = (time.perf_counter() - t0) * 1e3 / len(pending)
        scores = np.asarray(out[manifest.score_output], np.float64).reshape(-1)
        maps = np.asarray(out[manifest.map_output], np.float32)
        maps = maps.reshape(len(pending), *maps.shape[-2:])
        parts = _batch_score_parts(out, manifest.score_fusion, scores)
        for (sample, _, mask, pre_ms), score, amap, part in zip(pending, scores, maps, parts, strict=True):
            if not np.isfinite(score) or not np.isfinite(amap).all():
                skipped.append({"path": sample.rel_path, "reason": "the model returned a non-finite score or map"})
                log.warning("eval: skipped %s: non-finite model output", sample.rel_path)
                continue
            mask_small = None if mask is None else _resize_mask(mask, amap.shape)
            scored.append(Scored(sample.path, sample.rel_path, sample.defect_type, int(sample.label),
                                 sample.mask_path, float(score), amap.copy(), mask_small, part))
            per_image_ms.append(pre_ms + dt)
            infer_ms.append(dt)
        bar.step(len(pending))
        pending.clear()

    try:
        for sample in samples:
            try:
                image = load_image(sample.path)
                mask = load_mask(sample.mask_path, shape=image.shape) if sample.mask_path else None
                t0 = time.perf_counter()
                x = preprocess(image, spec, channel_order="RGB")
                pre_ms = (time.perf_counter() - t0) * 1e3
            except DataError as exc:  # ImageError included
                skipped.append({"path": sample.rel_path, "reason": str(exc)})
                log.warning("eval: skipped %s: %s", sample.rel_path, exc)
                bar.step()
                continue
            pending.append((sample, x, mask, pre_ms))
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()

    def stats(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        return float(np.median(values)), float(np.percentile(values, 99))

    med, p99 = stats(per_image_ms)
    imed, ip99 = stats(infer_ms)
    latency = {"median": med, "p99": p99, "infer_median": imed, "infer_p99": ip99, "batch_size": batch_size,
               "includes": "preprocess + inference per image (image decoding excluded), after one warm-up run"}
    return scored, skipped, latency


# ---------------------------------------------------------------------------------------------
# metrics


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
            pc = M.pixel_curves(masks, maps, max_fpr=MAX_FPR)
            out["aupro_30"] = M.aupro(masks, maps, max_fpr=MAX_FPR, curves=pc)
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
        op["calibration_skipped"] = "the manifest's calibration has no threshold_model (calibrated before schema 3)"
        return op
    check = M.calibration_check(labels, scores, calibration.image_threshold, tm.expected_frr, tm.frr_interval,
                                tm.confidence, calibration.escape_rate, calibration.escape_interval)
    check.update(target_false_reject_rate=tm.target_frr, calibration_n=tm.n, calibration_source=tm.source,
                 calibrated_at=tm.calibrated_at)
    op["calibration"] = check
    op["calibration_skipped"] = None
    if check["consistent"] is False:
        log.warning("eval: the test goods' false-reject rate %.2f %% at the calibrated threshold %.6g lies outside "
                    "the calibration's %.0f %% interval %.2f–%.2f %%", 100 * check["measured_false_reject_rate"],
                    calibration.image_threshold, 100 * tm.confidence, 100 * tm.frr_interval[0],
                    100 * tm.frr_interval[1])
    return op


def _score_parts_info(manifest: Manifest, scored: list[Scored]) -> dict | None:
    """metrics.json "score_parts": which output explains the score, and whether the backend gave it."""
    fusion = manifest.score_fusion
    if fusion is None:
        return None
    available = all(s.score_parts is not None for s in scored)
    reason = None if available else (f"the backend did not return a finite '{fusion.global_output}' for every "
                                     "image; predictions carry no score parts where it is missing")
    if reason:
        log.warning("eval: %s", reason)
    return {"global_output": fusion.global_output, "available": available, "reason": reason}


def _prediction(s: Scored, threshold: float) -> dict:
    """One predictions.jsonl record (score_parts only when the score is fused)."""
    rec = {"path": s.rel_path, "score": s.score, "label": _label(s.score, threshold), "truth": s.defect_type}
    if s.score_parts is not None:
        rec["score_parts"] = s.score_parts
    return rec


def _label(score: float, threshold: float) -> str:
    return "ng" if bool(M.predict_ng([score], threshold)[0]) else "ok"


# ---------------------------------------------------------------------------------------------
# the whole evaluation


def evaluate(model_dir, data_root, category: str, out_dir, backend: str = "onnxruntime", batch_size: int = 1,
             threshold: float | None = None, progress: bool = True, report: bool = True) -> dict:
    """Score ``<data_root>/<category>/test`` with the model and write metrics.json, predictions.jsonl
    and (``report``) report.html + PNGs into ``out_dir``. Returns the metrics dict.

    ``threshold`` overrides the manifest's calibrated image threshold. Raises DataError for an
    empty category or when no image could be scored; per-file problems are listed in "skipped".
    """
    from ..data.mvtec import MVTecCategory

    if batch_size < 1:
        from ..errors import ConfigError

        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    if threshold is not None and not np.isfinite(threshold):
        from ..errors import ConfigError

        raise ConfigError(f"threshold must be a finite number, got {threshold}")
    if report:  # fail before scoring, not after
        require("matplotlib", "eval", "the evaluation report (or skip it: --no-report)")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    manifest = load_manifest(model_dir)
    cat = MVTecCategory(data_root, category)
    samples = cat.test_samples(require_masks=False)
    masks_available = cat.has_masks()
    cal = manifest.calibration
    if threshold is None:
        threshold, source = cal.image_threshold, "manifest"
    else:
        threshold, source = float(threshold), "override"

    be = _open_backend(backend, model_dir, scoring_manifest(manifest))
    manifest = getattr(be, "manifest", None) or manifest
    log.info("eval: %d test images of %s with backend %s, threshold %.6g (%s)",
             len(samples), cat.path, backend, threshold, source)
    with be:
        scored, skipped, latency = score_samples(be, manifest, samples, batch_size, progress)
    if not scored:
        first = skipped[0]["reason"] if skipped else "no images"
        raise DataError(f"no test image of {cat.path} could be scored ({len(skipped)} skipped; first: {first})")

    values, curves = compute_metrics(scored, threshold, masks_available)
    per_type_counts: dict[str, int] = {}
    for s in scored:
        per_type_counts[s.defect_type] = per_type_counts.get(s.defect_type, 0) + 1
    result = {
        "model_id": manifest.model_id,
        "model_version": manifest.model_version,
        "backend": getattr(be, "name", backend),
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
        "decision_rule": "ng when score > threshold",
        "latency_ms": latency,
        "counts": {
            "images": len(samples),
            "scored": len(scored),
            "good": sum(1 for s in scored if s.label == 0),
            "defective": sum(1 for s in scored if s.label == 1),
            "skipped": len(skipped),
            "per_type": per_type_counts,
        },
        "skipped": skipped,
        "report": None,
    }

    with _writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / "predictions.jsonl"
    with _writing(predictions_path), open(predictions_path, "w") as fh:  # close() may be what fails
        for s in scored:
            fh.write(json.dumps(_prediction(s, threshold)) + "\n")
    metrics_path = out_dir / "metrics.json"
    with _writing(metrics_path):  # before the report: keep it if that fails
        metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    if report:
        result["report"] = write_report(out_dir, result, scored, curves).name
        with _writing(metrics_path):
            metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("eval: wrote %s", metrics_path)
    return result


@contextmanager
def _writing(path: Path):
    """Turn an OSError (disk full, read-only, no permission) while writing ``path`` into DataError."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from exc


# ---------------------------------------------------------------------------------------------
# report


def _figure(**kw):
    """A matplotlib Figure on the Agg canvas, without pyplot's global state."""
    require("matplotlib", "eval", "the evaluation report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _plot_image_roc(path: Path, result: dict, scored: list[Scored], curves: dict) -> None:
    fig = _figure(figsize=(5.5, 5), dpi=110)
    ax = fig.add_subplot()
    fpr, tpr, _ = curves["image_roc"]
    ax.plot(fpr, tpr, color="black", lw=2, label=f"all defects (AUROC {result['image_auroc']:.3f})")
    labels = np.array([s.label for s in scored])
    scores = np.array([s.score for s in scored])
    types = np.array([s.defect_type for s in scored], dtype=object)
    per = result["per_defect_type"]
    if 1 < len(per) <= 10:
        for name, info in per.items():
            sel = (labels == 0) | (types == name)
            f, t, _ = M.image_roc(labels[sel], scores[sel])
            ax.plot(f, t, lw=1, alpha=0.8, label=f"{name} (AUROC {info['auroc']:.3f})")
    if result["false_reject_rate"] is not None and result["escape_rate"] is not None:
        ax.plot([result["false_reject_rate"]], [1 - result["escape_rate"]], "o", color="red", ms=8,
                label=f"threshold in force ({result['threshold']:.3g})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (good parts rejected)",
           ylabel="true-positive rate (defective parts caught)", title="Image-level ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with _writing(path):
        fig.savefig(path)


def _plot_pixel_curves(path: Path, result: dict, pc: M.PixelCurves) -> None:
    fig = _figure(figsize=(10, 4.6), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    step = max(1, pc.fpr.size // 2000)  # thin the curve for plotting only
    ax1.plot(pc.fpr[::step], pc.tpr[::step], color="black", lw=2,
             label=f"pixel AUROC {result['pixel_auroc']:.3f}")
    ax1.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    ax1.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (good pixels)",
            ylabel="true-positive rate (defect pixels)", title="Pixel-level ROC")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)

    def upto(x_max: float) -> tuple[np.ndarray, np.ndarray]:
        # the curve up to x_max, ending on the interpolated point at x_max (as the AUPRO integral does)
        keep = pc.fpr <= x_max
        return np.append(pc.fpr[keep], x_max), np.append(pc.pro[keep], np.interp(x_max, pc.fpr, pc.pro))

    ax2.plot(*upto(MAX_FPR * 1.2), color="tab:blue", lw=2, label=f"AUPRO≤{MAX_FPR:.0%} {result['aupro_30']:.3f}")
    ax2.fill_between(*upto(MAX_FPR), color="tab:blue", alpha=0.15)
    ax2.axvline(MAX_FPR, ls="--", color="grey", lw=1, label=f"FPR limit {MAX_FPR:.0%}")
    ax2.set(xlim=(0, MAX_FPR * 1.2), ylim=(-0.01, 1.01), xlabel="false-positive rate (good pixels)",
            ylabel="per-region overlap", title=f"PRO curve ({pc.regions} defect regions)")
    ax2.legend(loc="lower right", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with _writing(path):
        fig.savefig(path)


def _plot_operating_point(path: Path, op: dict) -> None:
    """False-reject rate (x, symmetric-log so 0 shows) vs escape rate (y) over all thresholds, with the
    threshold in force, the suggested thresholds and the zero-escape point marked."""
    curve = op["curve"]
    fig = _figure(figsize=(7.5, 5), dpi=110)
    ax = fig.add_subplot()
    ax.plot(curve["false_reject_rate"], curve["escape_rate"], "-o", color="black", lw=1.2, ms=2.5,
            label="every score as threshold")
    for p, marker in zip(op["suggested_thresholds"]["points"], "sD^v", strict=False):
        if p["threshold"] is not None:
            ax.plot([p["false_reject_rate"]], [p["escape_rate"]], marker, ms=7, mfc="none", mew=1.5,
                    label=f"suggested for FRR ≤ {p['target_false_reject_rate']:.1%}: {p['threshold']:.4g} "
                          f"(escapes {p['escape_rate']:.1%})")
    z = op["false_reject_rate_at_zero_escapes"]
    if z["threshold"] is not None:
        ax.plot([z["false_reject_rate"]], [z["escape_rate"]], "P", color="tab:green", ms=8,
                label=f"0 escapes: {z['threshold']:.4g} (FRR {z['false_reject_rate']:.1%})")
    f = curve["in_force"]
    ax.plot([f["false_reject_rate"]], [f["escape_rate"]], "o", color="red", ms=9,
            label=f"threshold in force {f['threshold']:.4g} ({op['threshold_source']})")
    # symlog: the many points at 0 false rejects stay on the plot; below 1/n goods nothing is measurable
    ax.set_xscale("symlog", linthresh=1e-3, linscale=0.5)
    ax.set(xlim=(-2e-4, 1.05), ylim=(-0.02, 1.02), xlabel="false-reject rate (good parts judged NG; symlog)",
           ylabel="escape rate (defective parts judged OK)",
           title="Operating point: false rejects vs escapes (measured on the test set)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with _writing(path):
        fig.savefig(path)


def _plot_histogram(path: Path, result: dict, scored: list[Scored]) -> None:
    fig = _figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.add_subplot()
    scores = np.array([s.score for s in scored])
    good = np.array([s.label == 0 for s in scored])
    edges = np.histogram_bin_edges(np.append(scores, result["threshold"]), bins=40)
    if good.any():
        ax.hist(scores[good], bins=edges, color="tab:green", alpha=0.6, label=f"good ({int(good.sum())})")
    if (~good).any():
        ax.hist(scores[~good], bins=edges, color="tab:red", alpha=0.6, label=f"defective ({int((~good).sum())})")
    ax.axvline(result["threshold"], color="black", lw=2,
               label=f"threshold in force {result['threshold']:.3g} ({result['threshold_source']})")
    if result.get("f1_threshold") is not None:
        ax.axvline(result["f1_threshold"], color="tab:purple", ls="--", lw=1.5,
                   label=f"F1-optimal on this set {result['f1_threshold']:.3g}")
    ax.set(xlabel="image score (higher = more anomalous; NG when above the threshold)", ylabel="images",
           title="Image scores: good vs defective")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with _writing(path):
        fig.savefig(path)


def _plot_overlays(path: Path, title: str, rows: list[Scored], threshold: float, pixel_threshold: float,
                   vmin: float, vmax: float) -> None:
    """One row per image: image | image + GT contour | heat map overlay (+ GT and pixel-threshold contours)."""
    import cv2

    from ..data.mvtec import load_image, load_mask

    height = 3.3 * len(rows) + 0.5  # inches
    fig = _figure(figsize=(10.5, height), dpi=90)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    heat = None
    for ax_row, s in zip(axes, rows, strict=True):
        image = load_image(s.path)
        h, w = image.shape[:2]
        amap = cv2.resize(s.amap, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = load_mask(s.mask_path, shape=image.shape) if s.mask_path else None
        for ax in ax_row:
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_title(f"{s.rel_path} (truth: {s.defect_type})\nscore {s.score:.3g} → {_verdict(s, threshold)}"
                            f"{_parts_text(s.score_parts)}", fontsize=8)
        ax_row[1].set_title("ground truth" if mask is not None and mask.any() else "ground truth: no defect", fontsize=8)
        heat = ax_row[2].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
        ax_row[2].set_title("anomaly map (dashed: > pixel threshold)", fontsize=8)
        if mask is not None and mask.any():
            for ax in ax_row[1:]:
                ax.contour(mask.astype(np.uint8), levels=[0.5], colors="lime", linewidths=1.2)
        if (amap > pixel_threshold).any() and (amap <= pixel_threshold).any():
            ax_row[2].contour(amap, levels=[pixel_threshold], colors="white", linewidths=1, linestyles="dashed")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.93, 1 - 0.4 / height))  # 0.4 in on top for the suptitle, clear of row titles
    if heat is not None:  # an opaque colour bar, not the half-transparent overlay's
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        cax = fig.add_axes((0.94, 0.2, 0.015, 0.6))
        fig.colorbar(ScalarMappable(Normalize(vmin, vmax), "jet"), cax=cax, label="anomaly map value")
    with _writing(path):
        fig.savefig(path)


def _verdict(s: Scored, threshold: float) -> str:
    """What the line did with the part at ``threshold``, in the plant's words (caught / ESCAPED / ...)."""
    ng = _label(s.score, threshold) == "ng"
    if s.label == 1:
        return "caught (NG)" if ng else "ESCAPED (OK)"
    return "FALSE REJECT (NG)" if ng else "ok (OK)"


def _parts_text(parts: dict | None) -> str:
    """', map a + global b' for a fused score, so a rejection says which part drove it; '' otherwise."""
    return "" if parts is None else f" = map {parts['map']:.3g} + global {parts['global']:.3g}"


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1%}" if pct else f"{v:.4g}"
    return html.escape(str(v))


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><a href="{html.escape(path.name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(alt)}"></a><figcaption>{html.escape(alt)} ({html.escape(path.name)})</figcaption></figure>')


def worst_parts(scored: list[Scored], k: int = WORST_K) -> tuple[list[Scored], list[Scored]]:
    """(worst misses, worst false alarms): the ``k`` lowest-scored defective parts, caught or not (the
    ones closest to escaping, or escaped), and the ``k`` highest-scored good parts. Ties by path."""
    bad = sorted((s for s in scored if s.label == 1), key=lambda s: (s.score, s.rel_path))
    good = sorted((s for s in scored if s.label == 0), key=lambda s: (-s.score, s.rel_path))
    return bad[:k], good[:k]


def _pct_interval(iv) -> str:
    return "–" if iv is None else f"{iv[0]:.2%} – {iv[1]:.2%}"


def _operating_point_html(op: dict) -> str:
    """The report's operating-point section: confusion counts, headline points, suggestions, calibration."""
    c = op["confusion"]
    confusion = (f"<table><tr><th>threshold in force {_fmt(c['threshold'])}</th><th>judged OK</th><th>judged NG</th></tr>"
                 f"<tr><th>good</th><td>{c['true_ok']} true OK</td><td>{c['false_reject']} false rejects</td></tr>"
                 f"<tr><th>defective</th><td>{c['escape']} escapes</td><td>{c['caught']} caught</td></tr></table>")

    def point(p: dict) -> str:
        if p["threshold"] is None:
            return f"– ({html.escape(p['reason'])})"
        return (f"threshold {_fmt(p['threshold'])}: false-reject rate {_fmt(p['false_reject_rate'], True)}, "
                f"escape rate {_fmt(p['escape_rate'], True)}")

    heads = [("escape rate at 1 % false rejects", point(op["escape_rate_at_1pct_false_rejects"])),
             ("false-reject rate at 0 escapes (highest threshold catching every defect)",
              point(op["false_reject_rate_at_zero_escapes"]))]
    heads_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in heads)
    sug = op["suggested_thresholds"]
    sug_rows = "".join(
        f"<tr><td>≤ {p['target_false_reject_rate']:.1%}</td><td>{_fmt(p['threshold'])}</td>"
        f"<td>{_fmt(p['false_reject_rate'], True)}</td><td>{_fmt(p['escape_rate'], True)}</td></tr>"
        for p in sug["points"])
    cal = op["calibration"]
    if cal is None:
        cal_html = f"<p class=note>Calibration check skipped: {html.escape(op['calibration_skipped'] or '')}</p>"
    else:
        verdict = {True: "agrees", False: "DISAGREES", None: "cannot tell"}[cal["consistent"]]
        cal_html = (
            f"<table><tr><th>calibration (threshold {_fmt(cal['threshold'])}, {html.escape(cal['calibration_source'])}, "
            f"n = {cal['calibration_n']})</th><th>false-reject rate</th><th>{cal['confidence']:.0%} interval</th></tr>"
            f"<tr><td>expected by the calibration</td><td>{_fmt(cal['expected_false_reject_rate'], True)}</td>"
            f"<td>{_pct_interval(cal['expected_false_reject_interval'])}</td></tr>"
            f"<tr><td>measured on the test goods ({cal['measured_false_rejects']} of {cal['good']})</td>"
            f"<td>{_fmt(cal['measured_false_reject_rate'], True)}</td>"
            f"<td>{_pct_interval(cal['measured_false_reject_interval'])}</td></tr></table>"
            f"<p>The test goods {verdict} with the calibration (the intervals {'overlap' if cal['consistent'] else 'do not overlap'}).</p>")
    return (f"<h2>Operating point</h2>{confusion}<table>{heads_html}</table>"
            f"<h3>Suggested thresholds (measured on {html.escape(sug['measured_on'])})</h3>"
            f"<p class=note>{html.escape(sug['note'])}.</p>"
            f"<table><tr><th>target false-reject rate</th><th>threshold</th><th>false-reject rate</th>"
            f"<th>escape rate</th></tr>{sug_rows}</table>"
            f"<h3>Calibration vs test goods</h3>{cal_html}")


def _worst_html(title: str, rows: list[Scored], threshold: float) -> str:
    """A table of the parts shown in an overlay figure: path, truth, score (and parts), verdict."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td><code>{html.escape(s.rel_path)}</code></td><td>{html.escape(s.defect_type)}</td>"
        f"<td>{_fmt(s.score)}{html.escape(_parts_text(s.score_parts))}</td><td>{html.escape(_verdict(s, threshold))}</td></tr>"
        for s in rows)
    return (f"<h3>{html.escape(title)}</h3><table><tr><th>image</th><th>truth</th><th>score</th>"
            f"<th>at threshold {_fmt(threshold)}</th></tr>{body}</table>")


def write_report(out_dir: Path, result: dict, scored: list[Scored], curves: dict) -> Path:
    """Write report.html and its PNGs into ``out_dir``; return the HTML path."""
    figures: list[tuple[Path, str]] = []
    if "image_roc" in curves:
        p = out_dir / "roc_image.png"
        _plot_image_roc(p, result, scored, curves)
        figures.append((p, "Image-level ROC"))
    if "pixel" in curves:
        p = out_dir / "roc_pixel.png"
        _plot_pixel_curves(p, result, curves["pixel"])
        figures.append((p, "Pixel-level ROC and PRO curve"))
    op = result["operating_point"]
    if op["curve"]["false_reject_rate"] is not None and op["curve"]["escape_rate"] is not None:
        p = out_dir / "frr_escape.png"
        _plot_operating_point(p, op)
        figures.append((p, "False rejects vs escapes"))
    p = out_dir / "score_histogram.png"
    _plot_histogram(p, result, scored)
    figures.append((p, "Score histogram"))

    good = [s for s in scored if s.label == 0]
    good_med = float(np.median([np.median(s.amap) for s in good])) if good else float(
        min(s.amap.min() for s in scored))
    worst_misses, false_alarms = worst_parts(scored)
    shown = worst_misses + false_alarms
    if shown:
        vmax = max(float(np.percentile(s.amap, 99.9)) for s in shown)
        vmax = max(vmax, result["pixel_threshold"], good_med + 1e-6)
        for name, rows, title in (("worst_misses.png", worst_misses,
                                   "Defective parts scored lowest (worst misses): caught or ESCAPED"),
                                  ("worst_false_alarms.png", false_alarms, "Good parts scored highest (worst false alarms)")):
            if rows:
                p = out_dir / name
                _plot_overlays(p, title, rows, result["threshold"], result["pixel_threshold"], good_med, vmax)
                figures.append((p, title))

    r = result
    table = [
        ("image AUROC", _fmt(r["image_auroc"])), ("pixel AUROC", _fmt(r["pixel_auroc"])),
        (f"AUPRO (FPR ≤ {MAX_FPR:.0%})", _fmt(r["aupro_30"])), ("F1-max (threshold)", f"{_fmt(r['f1_max'])} ({_fmt(r['f1_threshold'])})"),
        ("threshold in force", f"{_fmt(r['threshold'])} ({html.escape(r['threshold_source'])}: {html.escape(r['threshold_method'])})"),
        ("false-reject rate (good)", f"{_fmt(r['false_reject_rate'], True)} ({r['false_rejects']} of {r['counts']['good']})"),
        ("escape rate (defective)", f"{_fmt(r['escape_rate'], True)} ({r['escapes']} of {r['counts']['defective']})"),
        ("latency per image, median / p99", f"{_fmt(r['latency_ms']['median'])} / {_fmt(r['latency_ms']['p99'])} ms"),
        ("images scored / skipped", f"{r['counts']['scored']} / {r['counts']['skipped']}"),
    ]
    rows_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in table)
    per_html = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{i['count']}</td><td>{_fmt(i['auroc'])}</td>"
        f"<td>{_fmt(i['escape_rate'], True)}</td><td>{_fmt(i['mean_score'])}</td></tr>"
        for t, i in r["per_defect_type"].items()
    )
    notes = [f"Pixel metrics skipped: {r['pixel_metrics_skipped']}" if r.get("pixel_metrics_skipped") else "",
             f"Image metrics skipped: {r['image_metrics_skipped']}" if r.get("image_metrics_skipped") else "",
             r.get("pixel_metrics_note") or ""]
    notes_html = "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes if n)
    skipped_html = "".join(f"<li><code>{html.escape(s['path'])}</code>: {html.escape(s['reason'])}</li>"
                           for s in r["skipped"])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>edge-inspect evaluation: {html.escape(r['category'])} / {html.escape(r['model_id'])}</title>
<style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}} th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}
figure{{margin:1.5em 0}} img{{max-width:100%;border:1px solid #ddd}} .note{{color:#a15c00}}
</style></head><body>
<h1>Evaluation: {html.escape(r['category'])}</h1>
<p>Model <b>{html.escape(r['model_id'])}</b> v{html.escape(str(r['model_version']))}, backend
<b>{html.escape(str(r['backend']))}</b>, {html.escape(r['created_at'])}. Decision rule: {html.escape(r['decision_rule'])}.</p>
{notes_html}
<h2>Metrics</h2><table>{rows_html}</table>
{_operating_point_html(op)}
<h2>Per defect type</h2>
<table><tr><th>type</th><th>images</th><th>AUROC vs good</th><th>escape rate</th><th>mean score</th></tr>{per_html}</table>
{_worst_html("Worst misses: defective parts scored lowest", worst_misses, r["threshold"])}
{_worst_html("Worst false alarms: good parts scored highest", false_alarms, r["threshold"])}
<h2>Figures</h2>
{''.join(_img_tag(p, alt) for p, alt in figures)}
{f'<h2>Skipped files</h2><ul>{skipped_html}</ul>' if skipped_html else ''}
</body></html>
"""
    path = out_dir / "report.html"
    with _writing(path):
        path.write_text(page, encoding="utf-8")
    log.info("eval: report %s", path)
    return path

"""Thresholds from good (and optionally defective) parts' scores → ``manifest.Calibration``.

Used at export (held-out training goods, cross-fitted by the trainer) and by ``edge-inspect calibrate``
(goods seen by the real camera on site).

Image threshold in force: set for a target false-reject rate (default 0.5 %) from a model of good scores
(edge_inspect.threshold_model: Yeo-Johnson + Student-t predictive bound), in the score's own units, with
bootstrap intervals of the threshold and of the false-reject rate it gives. Parts are NG when
``score > threshold``. Fewer than RECOMMENDED_N good scores are logged as too few (the interval says how
much that costs).

When labelled defective scores are given, the share of them the threshold lets through (escape rate,
with its Wilson interval) and the F1-optimal threshold are stored beside it; the F1 threshold is not put
in force, since a threshold fitted on a handful of defects rarely transfers.

Pixel threshold: the ``pixel_quantile`` of all good-map pixels, so defect regions show only where the
map rises above what good parts show. Without good maps it falls back to the image threshold and says
so in the method string.

Score normalisation for display: ``clip((score − threshold) / (norm_max − norm_min) + 0.5, 0, 1)``.
norm_min = median good score, norm_max = threshold + (threshold − median): a typical good part shows 0,
the threshold 0.5, a part as far above the threshold as typical good is below it 1. Heat maps use the
same formula around the pixel threshold with ``map_norm_span``: the span the score would have if it were
the map's maximum (the good maps' maxima through the same threshold model), so they stay in the map's
units when the image score is fused with the global score.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError, DataError
from ..manifest import Calibration, ScoreStats, ThresholdModel, utc_now
from ..threshold_model import RECOMMENDED_N, fit_good_scores, operating_point, wilson_interval
from .metrics import f1_max, predict_ng

log = logging.getLogger(__name__)

STAT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995)


def _finite_1d(values, what: str, minimum: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: not a list of numbers ({exc})") from exc
    if arr.size < minimum:
        raise DataError(f"{what}: need at least {minimum} scores to calibrate, got {arr.size}")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise DataError(f"{what}: {bad} of {arr.size} scores are NaN or inf; check the model and images")
    return arr


def score_stats(scores) -> ScoreStats:
    """Count, mean, std, min, max and the STAT_QUANTILES of 1-D finite scores."""
    s = _finite_1d(scores, "scores", 1)
    return ScoreStats(
        count=int(s.size), mean=float(s.mean()), std=float(s.std()), min=float(s.min()), max=float(s.max()),
        quantiles={str(q): float(np.quantile(s, q)) for q in STAT_QUANTILES},
    )


def _good_pixels(good_maps) -> np.ndarray:
    """Every pixel of the good maps as one float32 vector ((N,1,H,W), (N,H,W), (H,W) or a list of maps)."""
    if isinstance(good_maps, np.ndarray):
        parts = [good_maps]
    else:
        parts = [np.asarray(m) for m in good_maps]
    if not parts or sum(p.size for p in parts) == 0:
        raise DataError("good_maps: no anomaly maps given")
    try:
        pixels = np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in parts])
    except (TypeError, ValueError) as exc:
        raise DataError(f"good_maps: not numeric arrays ({exc})") from exc
    if not np.isfinite(pixels).all():
        raise DataError("good_maps: anomaly maps contain NaN or inf; check the model and images")
    return pixels


def _map_maxima(good_maps) -> np.ndarray:
    """The maximum of each good map (same inputs as _good_pixels)."""
    if isinstance(good_maps, np.ndarray) and good_maps.ndim <= 2:
        good_maps = [good_maps]
    return np.asarray([float(np.max(m)) for m in good_maps])


def calibrate(good_scores, defect_scores=None, good_maps=None, target_frr: float = 0.005, confidence: float = 0.9,
              pixel_quantile: float = 0.999, score_lower_bound: float | None = None,
              map_lower_bound: float | None = None, source: str = "held-out good images",
              defects_source: str | None = None, seed: int = 0) -> Calibration:
    """Thresholds and score statistics from good (and optionally defective) parts.

    good_scores: (N,) image scores of good parts the model never trained on, N ≥ 2. defect_scores: (M,)
    scores of labelled defective parts or None. good_maps: anomaly maps of good parts ((N,1,H,W), (N,H,W)
    or a list) or None. score_lower_bound / map_lower_bound: the least score / map value the model gives
    (None: unbounded). Raises DataError for too few or non-finite scores, ConfigError for bad parameters.
    """
    if not 0 < pixel_quantile <= 1:
        raise ConfigError(f"pixel_quantile must be in (0, 1], got {pixel_quantile}")
    good = _finite_1d(good_scores, "good_scores", 2)
    if good.size < RECOMMENDED_N:
        log.warning("calibration: only %d good scores (%d or more recommended); the threshold's interval is wide. "
                    "Give more good images (hold out more at training, or 'edge-inspect calibrate --goods DIR')",
                    good.size, RECOMMENDED_N)
    op = operating_point(good, target_frr, confidence, seed=seed, lower_bound=score_lower_bound)
    threshold = op.threshold
    method = (f"target false-reject rate {target_frr:.3%} from {good.size} good scores ({source}): "
              f"Student-t predictive bound, Yeo-Johnson lambda {op.model.yj_lambda:g}")
    model = ThresholdModel(
        n=op.model.n, center=op.model.center, scale=op.model.scale, yj_lambda=op.model.yj_lambda,
        mean=op.model.mean, std=op.model.std, target_frr=op.target_frr, expected_frr=op.expected_frr,
        confidence=op.confidence, frr_interval=op.frr_interval, threshold_interval=op.threshold_interval,
        source=source, calibrated_at=utc_now(),
    )

    defect_stats = threshold_f1 = escape_rate = escape_interval = None
    if defect_scores is not None:
        defects = _finite_1d(defect_scores, "defect_scores", 1)
        defect_stats = score_stats(defects)
        labels = np.concatenate([np.zeros(good.size, int), np.ones(defects.size, int)])
        f1, threshold_f1 = f1_max(labels, np.concatenate([good, defects]))
        escapes = int((~predict_ng(defects, threshold)).sum())
        escape_rate = escapes / defects.size
        escape_interval = wilson_interval(escapes, defects.size, confidence)
        log.info("calibration: %d of %d defects pass at the threshold (escape rate %.1f %%); F1-optimal threshold "
                 "%.6g (F1 %.3f)", escapes, defects.size, 100 * escape_rate, threshold_f1, f1)

    if good_maps is not None:
        pixel_threshold = float(np.quantile(_good_pixels(good_maps), pixel_quantile))
        if map_lower_bound is not None:
            pixel_threshold = max(pixel_threshold, map_lower_bound)
        method += f"; pixel: quantile {pixel_quantile:g} of good-map pixels"
    else:
        pixel_threshold = threshold
        method += "; pixel: image threshold (no good maps given)"

    median = float(np.median(good))
    half = _half_span(threshold, median)
    map_span = None
    if good_maps is not None:
        maxima = _map_maxima(good_maps)
        try:
            q_max = fit_good_scores(maxima).threshold_for(target_frr)
        except DataError:  # identical maxima (a constant map): no spread to model
            q_max = float(maxima.max())
        map_span = 2.0 * _half_span(q_max, float(np.median(maxima)))
    log.info("calibration: image threshold %.6g for a %.2f %% false-reject rate (%.0f %% interval of that rate "
             "%.2f-%.2f %%), pixel threshold %.6g", threshold, 100 * target_frr, 100 * confidence,
             100 * op.frr_interval[0], 100 * op.frr_interval[1], pixel_threshold)
    return Calibration(
        image_threshold=float(threshold),
        image_threshold_method=method,
        image_threshold_f1=None if threshold_f1 is None else float(threshold_f1),
        pixel_threshold=pixel_threshold,
        good_scores=score_stats(good),
        defect_scores=defect_stats,
        norm_min=median,
        norm_max=float(threshold + half),
        map_norm_span=map_span,
        threshold_model=model,
        score_lower_bound=score_lower_bound,
        map_lower_bound=map_lower_bound,
        escape_rate=escape_rate,
        escape_interval=escape_interval,
        defects_source=defects_source,
    )


def _half_span(threshold: float, median: float) -> float:
    """threshold − median, kept > 0 even for constant scores."""
    return max(threshold - median, 1e-6 * max(1.0, abs(threshold)))

"""Thresholds from held-out images at export time → ``manifest.Calibration``.

Image threshold in force: the ``quantile`` of held-out good image scores widened by ``margin``:
``q × margin`` for q ≥ 0 (anomaly scores are normally ≥ 0); written ``q + (margin − 1)·|q|`` so a
negative q is widened upwards too. With the default 0.995 × 1.05 about 0.5 % of good parts of the
held-out kind, less the margin's effect, would be rejected. Parts are NG when ``score > threshold``.
The quantile needs ≥ 1 / (1 − quantile) good scores (200 at 0.995) to mean more than "the
maximum"; with fewer it is logged.

When labelled defective scores are given, the F1-optimal threshold is stored beside it
(``image_threshold_f1``) for the operator to choose; it is not put in force, since a threshold
fitted on a handful of defects rarely transfers.

Pixel threshold: the ``pixel_quantile`` of all good-map pixels (no margin), so defect regions show
only where the map rises above what good parts show. Without good maps it falls back to the image
threshold and says so in the method string (the units agree only when the score is the map's maximum,
not when it is fused with the image-level Gaussian; export always gives good maps).

Score normalisation for display: ``clip((score − threshold) / (norm_max − norm_min) + 0.5, 0, 1)``.
norm_min = median good score, norm_max = threshold + (threshold − median): a typical good part
shows 0, the threshold 0.5, a part as far above the threshold as typical good is below it 1.
Heat maps use the same formula around the pixel threshold with ``map_norm_span``: the span the score
would have if it were the map's maximum (the good maps' maxima through the same quantile and
margin), so they stay in the map's units when the image score is fused with the global score.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import ConfigError, DataError
from ..manifest import Calibration, ScoreStats
from .metrics import f1_max

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


def calibrate(good_scores, defect_scores=None, good_maps=None, quantile: float = 0.995,
              margin: float = 1.05, pixel_quantile: float = 0.999) -> Calibration:
    """Thresholds and score statistics from held-out good (and optionally defective) images.

    good_scores: (N,) image scores of good parts, N ≥ 2. defect_scores: (M,) scores of labelled
    defective parts or None. good_maps: anomaly maps of good parts ((N,1,H,W), (N,H,W) or a list)
    or None. Raises DataError for too few or non-finite scores, ConfigError for bad parameters.
    """
    if not 0 < quantile <= 1 or not 0 < pixel_quantile <= 1:
        raise ConfigError(f"quantiles must be in (0, 1]; got quantile={quantile}, pixel_quantile={pixel_quantile}")
    if not math.isfinite(margin) or margin < 1:
        raise ConfigError(f"margin must be a finite number ≥ 1, got {margin}")
    good = _finite_1d(good_scores, "good_scores", 2)
    needed = math.ceil(1 / (1 - quantile)) if quantile < 1 else 0
    if good.size < needed:
        log.warning("calibration: %d good scores are too few for a %.3f quantile (≥ %d); it is close to "
                     "their maximum", good.size, quantile, needed)
    q = float(np.quantile(good, quantile))
    threshold = q + (margin - 1.0) * abs(q)
    method = f"quantile {quantile:g} of {good.size} good scores x margin {margin:g}"

    defect_stats = None
    threshold_f1 = None
    if defect_scores is not None:
        defects = _finite_1d(defect_scores, "defect_scores", 1)
        defect_stats = score_stats(defects)
        labels = np.concatenate([np.zeros(good.size, int), np.ones(defects.size, int)])
        f1, threshold_f1 = f1_max(labels, np.concatenate([good, defects]))
        log.info("calibration: F1-optimal threshold %.6g (F1 %.3f on %d good + %d defective)",
                 threshold_f1, f1, good.size, defects.size)

    if good_maps is not None:
        pixel_threshold = float(np.quantile(_good_pixels(good_maps), pixel_quantile))
        method += f"; pixel: quantile {pixel_quantile:g} of good-map pixels"
    else:
        pixel_threshold = threshold
        method += "; pixel: image threshold (no good maps given)"

    median = float(np.median(good))
    half = _half_span(threshold, median)
    map_span = None
    if good_maps is not None:
        maxima = _map_maxima(good_maps)
        q_max = float(np.quantile(maxima, quantile))
        map_span = 2.0 * _half_span(q_max + (margin - 1.0) * abs(q_max), float(np.median(maxima)))
    log.info("calibration: image threshold %.6g (%s), pixel threshold %.6g", threshold, method, pixel_threshold)
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
    )


def _half_span(threshold: float, median: float) -> float:
    """threshold − median, kept > 0 even for constant scores."""
    return max(threshold - median, 1e-6 * max(1.0, abs(threshold)))

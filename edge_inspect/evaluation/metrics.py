"""Detection-quality metrics: image/pixel AUROC, AUPRO (≤ 30 % FPR), F1-max, reject/escape rates.

Conventions used everywhere in edge-inspect:
- label 1 = defective ("ng" truth), 0 = good; higher score = more anomalous.
- a part is judged NG when ``score > threshold`` (strictly above), so a threshold equal to the
  highest good score rejects none of the good parts.
- pixel inputs are anomaly maps (N, H, W) float and ground-truth masks (N, H, W) bool of the same
  size (resize masks to the map size, nearest, before calling).

Image-level metrics use scikit-learn directly. Pixel-level metrics stream over the maps one at a
time so ~600 maps of 256² (40 M pixels) need tens of MB, not the GBs a global sort would take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, require

# ---------------------------------------------------------------------------------------------
# image level


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or inf")
    if not set(np.unique(y)) <= {0, 1}:
        raise DataError("labels must be 0 (good) or 1 (defective)")
    return y, s


def _need_both_classes(y: np.ndarray, what: str) -> None:
    if y.size == 0 or y.min() == y.max():
        raise DataError(f"{what} needs both good and defective samples (got {int((y == 0).sum())} good, "
                        f"{int((y == 1).sum())} defective)")


def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of image scores (1 = perfectly separated, 0.5 = chance; ties count half)."""
    roc_auc_score = require("sklearn.metrics", "eval", "evaluation metrics").roc_auc_score

    y, s = _labels_scores(labels, scores)
    _need_both_classes(y, "AUROC")
    return float(roc_auc_score(y, s))


def image_roc(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of image scores, as sklearn.metrics.roc_curve returns them."""
    roc_curve = require("sklearn.metrics", "eval", "evaluation metrics").roc_curve

    y, s = _labels_scores(labels, scores)
    _need_both_classes(y, "ROC curve")
    fpr, tpr, thr = roc_curve(y, s)
    return fpr, tpr, thr


def f1_max(labels, scores) -> tuple[float, float]:
    """Best F1 over all thresholds and a threshold achieving it under the ``score > threshold`` rule.

    sklearn's precision_recall_curve counts ``score >= t`` as positive; the returned threshold is
    moved half-way down to the next lower score so the same split holds with ``>`` (and ``>=``).
    """
    precision_recall_curve = require("sklearn.metrics", "eval", "evaluation metrics").precision_recall_curve

    y, s = _labels_scores(labels, scores)
    _need_both_classes(y, "F1-max")
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point (P=1, R=0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    t = float(thresholds[best])
    lower = s[s < t]
    threshold = 0.5 * (t + float(lower.max())) if lower.size else float(np.nextafter(t, -np.inf))
    return float(f1[best]), threshold


def predict_ng(scores, threshold: float) -> np.ndarray:
    """(N,) bool: True where the part is judged NG (``score > threshold``)."""
    return np.asarray(scores, dtype=np.float64) > threshold


def rates_at_threshold(labels, scores, threshold: float, defect_types: Sequence[str] | None = None) -> dict:
    """False-reject rate on good parts and escape rate on defective parts at ``threshold``.

    Returns {"false_reject_rate", "escape_rate", "good", "defective", "false_rejects", "escapes",
    "per_defect_type": {type: {"count", "escapes", "escape_rate"}}} (per type only when
    ``defect_types`` (N,) is given; entries of good samples are ignored). A rate is None when
    its denominator is 0.
    """
    y, s = _labels_scores(labels, scores)
    ng = predict_ng(s, threshold)
    good, bad = y == 0, y == 1
    false_rejects = int((ng & good).sum())
    escapes = int((~ng & bad).sum())
    out = {
        "false_reject_rate": false_rejects / int(good.sum()) if good.any() else None,
        "escape_rate": escapes / int(bad.sum()) if bad.any() else None,
        "good": int(good.sum()),
        "defective": int(bad.sum()),
        "false_rejects": false_rejects,
        "escapes": escapes,
    }
    if defect_types is not None:
        types = np.asarray(list(defect_types), dtype=object)
        if types.shape != y.shape:
            raise DataError(f"defect_types ({types.size}) and scores ({y.size}) differ in length")
        per = {}
        for t in sorted({str(v) for v in types[bad]}):
            sel = bad & (types == t)
            n, e = int(sel.sum()), int((~ng & sel).sum())
            per[t] = {"count": n, "escapes": e, "escape_rate": e / n}
        out["per_defect_type"] = per
    return out


# ---------------------------------------------------------------------------------------------
# pixel level


def _as_pairs(masks, maps) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate and pair masks (N,H,W) bool with maps (N,H,W) float (lists of differing H,W allowed)."""
    if len(masks) != len(maps):
        raise DataError(f"{len(masks)} masks but {len(maps)} anomaly maps")
    if len(maps) == 0:
        raise DataError("no anomaly maps given")
    pairs = []
    for i, (m, a) in enumerate(zip(masks, maps, strict=True)):
        m = np.asarray(m)
        m = m if m.dtype == bool else m != 0
        a = np.asarray(a, dtype=np.float32)
        a = a.reshape(a.shape[-2:]) if a.ndim > 2 and np.prod(a.shape[:-2]) == 1 else a
        m = m.reshape(m.shape[-2:]) if m.ndim > 2 and np.prod(m.shape[:-2]) == 1 else m
        if m.shape != a.shape or a.ndim != 2:
            raise DataError(f"map {i}: mask shape {m.shape} does not match anomaly map shape {a.shape}")
        if not np.isfinite(a).all():
            raise DataError(f"map {i}: anomaly map contains NaN or inf")
        pairs.append((m, a))
    return pairs


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC, exact (equal to sklearn's roc_auc_score on all pixels, ties count half).

    Computed as P(defect pixel > good pixel) + ½ P(equal): the defect pixels are collected and
    sorted once, the good pixels are streamed map by map against them, so memory stays near the
    size of the defect pixels instead of several copies of every pixel.
    """
    pairs = _as_pairs(masks, maps)
    pos = np.sort(np.concatenate([a[m] for m, a in pairs]))
    n_pos = pos.size
    n_neg = sum(int((~m).sum()) for m, _ in pairs)
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"pixel AUROC needs defect and good pixels (got {n_pos} defect, {n_neg} good)")
    wins = 0.0  # sum over good pixels of (#defect pixels above it + ½ #equal)
    for m, a in pairs:
        neg = np.sort(a[~m])  # sorted needles make searchsorted cache-friendly: ~2× faster
        if neg.size == 0:
            continue
        lo = np.searchsorted(pos, neg, side="left")
        hi = np.searchsorted(pos, neg, side="right")
        wins += float((n_pos - hi).sum(dtype=np.int64)) + 0.5 * float((hi - lo).sum(dtype=np.int64))
    return wins / (float(n_pos) * float(n_neg))


@dataclass
class PixelCurves:
    """Pixel ROC and PRO curves at a set of thresholds, ordered by rising FPR (falling threshold).

    ``fpr``/``tpr``/``pro`` include the (0, 0) start and (1, 1) end points (``thresholds`` then has
    +inf and -inf there).
    """

    thresholds: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    pro: np.ndarray
    regions: int
    good_pixels: int
    defect_pixels: int


def _threshold_grid(pairs, max_fpr: float, num_thresholds: int, exact_max_pixels: int) -> np.ndarray:
    """Ascending thresholds: every distinct value for small inputs, else a grid even in good-pixel FPR.

    The grid takes quantiles of (a strided sample of) good pixels at FPR levels 0..1.1·max_fpr plus
    coarse levels above, and the global min, so FPR/PRO are exact at each grid point and the curve
    below ``max_fpr`` has ~``num_thresholds`` points (integration error ≲ max_fpr / num_thresholds).
    """
    total = sum(a.size for _, a in pairs)
    lo = min(float(a.min()) for _, a in pairs)
    if total <= exact_max_pixels:
        return np.unique(np.concatenate([a.ravel() for _, a in pairs]))
    stride = max(1, total // 4_000_000)
    sample = np.concatenate([a[~m][::stride] for m, a in pairs])
    if sample.size == 0:
        sample = np.array([lo], np.float32)
    levels = np.concatenate([
        np.linspace(0.0, min(1.0, 1.1 * max_fpr), num_thresholds),
        np.linspace(min(1.0, 1.1 * max_fpr), 1.0, 50),
    ])
    grid = np.quantile(sample, 1.0 - levels).astype(np.float32)
    # just above the highest good pixel: the exact (FPR = 0, PRO) point, else the first segment is a
    # diagonal from (0, 0) and a perfect map would score below 1
    good_max = max((float(a[~m].max()) for m, a in pairs if (~m).any()), default=lo)
    top = np.nextafter(np.float32(good_max), np.float32(np.inf))
    return np.unique(np.concatenate([grid, [lo, good_max, top]]).astype(np.float32))


def _count_at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(K,) number of ``values`` ≥ each ascending threshold."""
    idx = np.searchsorted(thresholds, values, side="right")  # thresholds[j] <= v  for j < idx
    hist = np.bincount(idx, minlength=thresholds.size + 1)
    return np.cumsum(hist[::-1])[::-1][1:]


def pixel_curves(masks, maps, max_fpr: float = 0.3, num_thresholds: int = 1000,
                 exact_max_pixels: int = 1_000_000) -> PixelCurves:
    """Pixel ROC and per-region-overlap (PRO) curves, as in the MVTec AD reference evaluation.

    Regions are 8-connected components of each ground-truth mask. At threshold t a pixel is
    positive when its map value ≥ t; FPR is over all good pixels of all maps, PRO is the mean over
    all regions of the fraction of the region that is positive. Inputs up to ``exact_max_pixels``
    use every distinct map value as a threshold (identical to the reference); larger ones a grid
    (see _threshold_grid). Memory: one map at a time plus (regions × thresholds) counts per map.
    """
    import cv2

    pairs = _as_pairs(masks, maps)
    thr = _threshold_grid(pairs, max_fpr, num_thresholds, exact_max_pixels)
    k = thr.size
    good_ge = np.zeros(k, np.int64)
    defect_ge = np.zeros(k, np.int64)
    pro_sum = np.zeros(k, np.float64)
    n_regions = n_good = n_defect = 0
    for m, a in pairs:
        good_vals = a[~m]
        n_good += good_vals.size
        good_ge += _count_at_or_above(good_vals, thr)
        if not m.any():
            continue
        n_lab, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        n_reg = n_lab - 1
        region = lab[m].astype(np.int64) - 1
        vals = a[m]
        n_defect += vals.size
        defect_ge += _count_at_or_above(vals, thr)
        idx = np.searchsorted(thr, vals, side="right")
        hist = np.bincount(region * (k + 1) + idx, minlength=n_reg * (k + 1)).reshape(n_reg, k + 1)
        ge = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (regions, K) pixels ≥ thr
        sizes = np.bincount(region, minlength=n_reg)
        pro_sum += (ge / sizes[:, None]).sum(axis=0)
        n_regions += n_reg
    if n_regions == 0 or n_good == 0:
        raise DataError(f"pixel curves need defect regions and good pixels (got {n_regions} regions, "
                        f"{n_good} good pixels)")
    # falling threshold = rising FPR; pad with the (0,0) and (1,1) end points like the reference
    fpr = np.concatenate([[0.0], good_ge[::-1] / n_good, [1.0]])
    tpr = np.concatenate([[0.0], defect_ge[::-1] / n_defect, [1.0]])
    pro = np.concatenate([[0.0], pro_sum[::-1] / n_regions, [1.0]])
    thresholds = np.concatenate([[np.inf], thr[::-1].astype(np.float64), [-np.inf]])
    return PixelCurves(thresholds, np.minimum(fpr, 1.0), np.minimum(tpr, 1.0), np.minimum(pro, 1.0),
                       n_regions, n_good, n_defect)


def area_under(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Trapezoidal area under y(x) for x in [x[0], x_max]; y at x_max is interpolated linearly.

    ``x`` must be non-decreasing (repeated x = vertical step).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x_max is not None:
        keep = x <= x_max
        if not keep.all() and x_max not in x:
            i = int(np.argmax(~keep))  # first point past x_max; i > 0 since x[0] <= x_max
            y_at = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
            x = np.append(x[keep], x_max)
            y = np.append(y[keep], y_at)
        else:
            x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def aupro(masks, maps, max_fpr: float = 0.3, num_thresholds: int = 1000,
          curves: PixelCurves | None = None) -> float:
    """Area under the PRO curve for FPR in [0, max_fpr], divided by max_fpr (1.0 = perfect)."""
    if not 0 < max_fpr <= 1:
        raise DataError(f"max_fpr must be in (0, 1], got {max_fpr}")
    c = curves or pixel_curves(masks, maps, max_fpr=max_fpr, num_thresholds=num_thresholds)
    return area_under(c.fpr, c.pro, max_fpr) / max_fpr

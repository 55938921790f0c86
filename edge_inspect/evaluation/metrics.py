"""Detection-quality metrics: image/pixel AUROC, AUPRO (≤ 30 % FPR), F1-max, reject/escape rates and the
operating point (false-reject vs escape curve, suggested thresholds, confusion counts).

Conventions used everywhere in edge-inspect:
- label 1 = defective ("ng" truth), 0 = good; higher score = more anomalous.
- a part is judged NG by the one ok/ng rule, ``decision.is_ng`` (NG when the score lies strictly
  above the threshold, so a threshold equal to the highest good score rejects none of the good parts).
  Nothing here compares a score with a threshold itself: ``predict_ng`` and ``_sweep`` ask that rule.
- pixel inputs are anomaly maps (N, H, W) float and ground-truth masks (N, H, W) bool of the same
  size (resize masks to the map size, nearest, before calling).

Image-level metrics use scikit-learn directly. Pixel-level metrics stream over the maps one at a
time so ~600 maps of 256² (40 M pixels) need tens of MB, not the GBs a global sort would take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import decision
from ..errors import DataError, require

DECISION_RULE = "ng when score > threshold"  # the rule's wording in metrics.json and the report
MAX_FPR = 0.3  # AUPRO is integrated up to this pixel false-positive rate

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


def auroc_standard_error(auroc: float, n_defective: int, n_good: int) -> float:
    """Standard error of an AUROC measured on ``n_defective`` + ``n_good`` samples (Hanley & McNeil, Radiology
    1982): how far the same method's AUROC would move on another sample of the same size."""
    if n_defective < 1 or n_good < 1:
        raise DataError(f"an AUROC's standard error needs both classes (got {n_good} good, {n_defective} defective)")
    a = float(auroc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_defective - 1) * (q1 - a * a) + (n_good - 1) * (q2 - a * a)) / (n_defective * n_good)
    return float(np.sqrt(max(var, 0.0)))


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


def label_at(score: float, threshold: float) -> str:
    """"ok" or "ng" for one image ``score`` at ``threshold``, by the one rule (decision.is_ng)."""
    return "ng" if bool(decision.is_ng(float(score), threshold)) else "ok"


def predict_ng(scores, threshold: float) -> np.ndarray:
    """Bool array shaped like ``scores``: True where the rule (decision.is_ng) judges the part NG."""
    return np.asarray(decision.is_ng(scores, threshold), dtype=bool)


def _sweep(y: np.ndarray, s: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct score as the threshold: (thresholds (K,) ascending, false rejects (K,), escapes (K,))
    for labels ``y`` (N,) and finite scores ``s`` (N,). The rule is asked for every (threshold, distinct
    score) pair, in blocks of ``block`` thresholds to bound memory; counts come from the ranked scores."""
    values, rank = np.unique(s, return_inverse=True)
    rank = rank.reshape(-1)
    good_at = np.bincount(rank[y == 0], minlength=values.size)
    bad_at = np.bincount(rank[y == 1], minlength=values.size)
    first = np.empty(values.size, dtype=np.intp)  # per threshold: the lowest distinct score judged NG
    for i in range(0, values.size, block):
        ng = predict_ng(values[None, :], values[i : i + block, None])
        first[i : i + block] = np.where(ng.any(axis=1), ng.argmax(axis=1), values.size)
    ng_good = np.append(np.cumsum(good_at[::-1])[::-1], 0)[first]  # good parts scored at or above that score
    ng_bad = np.append(np.cumsum(bad_at[::-1])[::-1], 0)[first]
    return values, ng_good, int(bad_at.sum()) - ng_bad


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
# operating point: false rejects of good parts vs escapes of defects, across thresholds

FRR_TARGETS = (0.001, 0.005, 0.01, 0.02)  # false-reject rates a plant typically asks about
_NO_GOOD = "no good parts in the test set: false-reject rates are undefined"
_NO_DEFECT = "no defective parts in the test set: escape rates are undefined"


def _missing_reason(y: np.ndarray) -> str | None:
    """Why a rate is None for labels ``y`` (N,): which class is absent; None when both are present."""
    absent = ((_NO_GOOD, not (y == 0).any()), (_NO_DEFECT, not (y == 1).any()))
    reasons = [reason for reason, missing in absent if missing]
    return "; ".join(reasons) or None


def _point(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    """One operating point: {"threshold", "false_reject_rate", "escape_rate", "false_rejects", "escapes"}.

    Rates are fractions in [0, 1] (None when the test set has no parts of that class)."""
    r = rates_at_threshold(y, s, threshold)
    return {"threshold": float(threshold), "false_reject_rate": r["false_reject_rate"],
            "escape_rate": r["escape_rate"], "false_rejects": r["false_rejects"], "escapes": r["escapes"]}


def confusion_counts(labels, scores, threshold: float) -> dict:
    """Counts of the four outcomes at ``threshold`` (NG when ``score > threshold``).

    labels (N,) 0 good / 1 defective, scores (N,). Returns {"true_ok": good judged OK, "false_reject": good
    judged NG, "escape": defect judged OK, "caught": defect judged NG} (ints summing to N).
    """
    y, s = _labels_scores(labels, scores)
    ng = predict_ng(s, threshold)
    good, bad = y == 0, y == 1
    return {"true_ok": int((~ng & good).sum()), "false_reject": int((ng & good).sum()),
            "escape": int((~ng & bad).sum()), "caught": int((ng & bad).sum())}


def frr_escape_curve(labels, scores) -> dict:
    """False-reject rate on good parts and escape rate on defects at every distinct score as threshold.

    labels (N,) 0 good / 1 defective, scores (N,). Returns {"thresholds": (K,) ascending distinct scores,
    "false_reject_rate": (K,), "escape_rate": (K,), "reason"} as lists (K ≤ N). Raising the threshold
    lowers the false-reject rate and raises the escape rate; at the highest score nothing is NG. A rate
    list is None when the test set has no parts of its class, and "reason" says so (else None).
    """
    y, s = _labels_scores(labels, scores)
    n_good, n_bad = int((y == 0).sum()), int((y == 1).sum())
    thresholds, false_rejects, escapes = _sweep(y, s)
    frr = [int(k) / n_good for k in false_rejects] if n_good else None
    esc = [int(k) / n_bad for k in escapes] if n_bad else None
    return {"thresholds": thresholds.tolist(), "false_reject_rate": frr, "escape_rate": esc,
            "reason": _missing_reason(y)}


def threshold_for_frr(labels, scores, target_frr: float) -> dict:
    """The lowest distinct score whose false-reject rate on the good parts is ≤ ``target_frr``.

    labels (N,), scores (N,), target_frr a fraction in [0, 1). The false-reject rate only falls as the
    threshold rises, so this is the threshold that catches most defects within the target. With n good
    parts a rate below 1/n is measured as 0: such targets give the highest good score. Returns the point
    (see _point) plus "target_false_reject_rate" and "reason"; threshold and rates are None with a reason
    when there are no good parts, the escape rate is None when there are no defects.
    """
    if not 0 <= target_frr < 1:
        raise DataError(f"target false-reject rate must be in [0, 1), got {target_frr}")
    y, s = _labels_scores(labels, scores)
    n_good = int((y == 0).sum())
    if n_good == 0:
        return {"target_false_reject_rate": target_frr, "threshold": None, "false_reject_rate": None,
                "escape_rate": None, "false_rejects": None, "escapes": None, "reason": _NO_GOOD}
    # integer count bound, so 1/100 ≤ 0.01 holds whatever the float rounding of k / n
    allowed = int(np.floor(target_frr * n_good + 1e-9))
    thresholds, false_rejects, _ = _sweep(y, s)
    fits = np.flatnonzero(false_rejects <= allowed)  # ascending: the first that fits is the lowest
    if not fits.size:
        raise AssertionError("unreachable: at the highest score no part is NG")
    t = float(thresholds[fits[0]])
    return {"target_false_reject_rate": target_frr, **_point(y, s, t), "reason": _missing_reason(y)}


def zero_escape_point(labels, scores) -> dict:
    """The highest threshold that still catches every defect, and the false-reject rate it costs.

    labels (N,), scores (N,). Every threshold below the lowest defect score catches all defects and all
    of them in [s, lowest defect) give the same rates, where s is the highest score below the lowest
    defect; that s is returned. When no score lies below the lowest defect (a defect has the lowest
    score), the threshold is the float just below it and every good part at or above it is rejected.
    Returns the point (see _point) plus "reason"; all None with a reason when there are no defects
    (every threshold "catches" them), the false-reject rate None when there are no good parts.
    """
    y, s = _labels_scores(labels, scores)
    if not (y == 1).any():
        return {"threshold": None, "false_reject_rate": None, "escape_rate": None, "false_rejects": None,
                "escapes": None, "reason": _NO_DEFECT}
    lowest_defect = float(s[y == 1].min())
    below = s[s < lowest_defect]
    t = float(below.max()) if below.size else float(np.nextafter(lowest_defect, -np.inf))
    return {**_point(y, s, t), "reason": _missing_reason(y)}


def calibration_check(labels, scores, threshold: float, expected_frr: float,
                      frr_interval: tuple[float, float], confidence: float,
                      expected_escape_rate: float | None = None,
                      escape_interval: tuple[float, float] | None = None) -> dict:
    """Compare the calibration's predicted rates at its threshold with what the test set measures.

    labels (N,), scores (N,); ``threshold`` is the calibrated image threshold (the prediction is for it,
    whatever threshold the evaluation uses); rates are fractions. The measured false-reject rate gets a
    Wilson interval at the calibration's ``confidence``; "consistent" is True when that interval overlaps
    the calibration's ``frr_interval`` (the test goods do not contradict the calibration), None when there
    are no good parts. The same for escapes when the calibration has an escape rate.
    """
    from ..threshold_model import wilson_interval

    y, s = _labels_scores(labels, scores)
    p = _point(y, s, threshold)
    n_good, n_bad = int((y == 0).sum()), int((y == 1).sum())

    def overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool | None:
        return None if a is None or b is None else bool(a[0] <= b[1] and b[0] <= a[1])

    measured = wilson_interval(p["false_rejects"], n_good, confidence) if n_good else None
    out = {
        "threshold": float(threshold), "confidence": float(confidence),
        "expected_false_reject_rate": float(expected_frr),
        "expected_false_reject_interval": list(frr_interval),
        "measured_false_reject_rate": p["false_reject_rate"], "measured_false_rejects": p["false_rejects"],
        "good": n_good, "measured_false_reject_interval": list(measured) if measured else None,
        "consistent": overlap(tuple(frr_interval), measured),
        "reason": None if n_good else _NO_GOOD,
    }
    if expected_escape_rate is not None:
        measured_esc = wilson_interval(p["escapes"], n_bad, confidence) if n_bad else None
        out.update(expected_escape_rate=float(expected_escape_rate),
                   expected_escape_interval=list(escape_interval) if escape_interval else None,
                   measured_escape_rate=p["escape_rate"], defective=n_bad,
                   measured_escape_interval=list(measured_esc) if measured_esc else None,
                   escape_consistent=overlap(tuple(escape_interval) if escape_interval else None,
                                             measured_esc))
    return out


def operating_point_summary(labels, scores, threshold: float,
                            frr_targets: Sequence[float] = FRR_TARGETS) -> dict:
    """Everything a plant reads off the scores: the curve, suggested thresholds and the point in force.

    labels (N,), scores (N,), ``threshold`` the one in force. Returns {"decision_rule", "curve" (see
    frr_escape_curve, plus "in_force": the point at ``threshold``), "confusion" (see confusion_counts,
    at ``threshold``), "suggested_thresholds" {"measured_on", "for_information_only", "note", "resolution",
    "points": [threshold_for_frr per target]}, "escape_rate_at_1pct_false_rejects",
    "false_reject_rate_at_zero_escapes" (see zero_escape_point)}.
    """
    y, s = _labels_scores(labels, scores)
    n_good, n_bad = int((y == 0).sum()), int((y == 1).sum())
    curve = frr_escape_curve(y, s)
    curve["in_force"] = _point(y, s, threshold)
    return {
        "decision_rule": DECISION_RULE,
        "curve": curve,
        "confusion": {"threshold": float(threshold), **confusion_counts(y, s, threshold)},
        "suggested_thresholds": {
            "measured_on": f"the test set: {n_good} good and {n_bad} defective parts",
            "for_information_only": True,
            # chosen on the very parts they are measured on: optimistic, and a defect test set is not the
            # line's mix. The line's threshold comes from good parts alone, with an interval.
            "note": "measured on the test set the thresholds were picked on, so optimistic: for information, "
                    "not for setting the line; set the threshold with 'edge-inspect calibrate' on good parts",
            # the smallest non-zero false-reject rate measurable
            "resolution": 1.0 / n_good if n_good else None,
            "points": [threshold_for_frr(y, s, t) for t in frr_targets],
        },
        "escape_rate_at_1pct_false_rejects": threshold_for_frr(y, s, 0.01),
        "false_reject_rate_at_zero_escapes": zero_escape_point(y, s),
    }


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

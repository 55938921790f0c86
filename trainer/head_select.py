"""``--head auto``: pick the map-head settings on validation (held-out goods + validation anomalies), never on test.

The networks run once over the validation set; every candidate head is then recombined from the same
components (student-teacher map and discriminator probability at stride 4, regional map at stride 16,
image-level distance), so the whole grid (36 heads) costs about one pass. Fused heads standardise with
good-image statistics; here those come from other folds of the validation goods than the ones scored
(a validation anomaly sits in the fold of the good image it was made on), as a new part is scored.

Not in the grid: ``region_window`` (it changes the regional Gaussian, fitted on the training images) and
``score_topk``. ``global_weight`` stays at the configured value (``--head global_weight=W`` sets it): the
validation anomalies are local and barely move an image's pooled statistics, so validation cannot grade the
image-level Gaussian. Searched anyway, it set the weight to 0 on a 300-goods magnetic_tile run, and the test
set's image AUROC fell from 0.884 to 0.837 (issue 19's notes).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import torch

from edge_inspect.errors import ConfigError
from edge_inspect.evaluation.metrics import auroc_standard_error, image_auroc

from .model import gaussian_kernel, smooth_full
from .train import _cl, _progress, fused_outputs, input_spec, score_statistics
from .validation import figure, make_validation_set, pooled_masks, scores_of

log = logging.getLogger(__name__)
HEAD_GRID: dict[str, tuple[float, ...]] = {
    "st_exponent": (0.0, 0.5, 1.0),
    "map_sigma": (2.0, 4.0, 8.0),
    "region_weight": (0.0, 0.5, 1.0, 2.0),
}
NOT_SEARCHED = ("global_weight",)  # kept at the configured (or explicit) value: see the module docstring
MAX_VALIDATION_GOODS = 100  # enough to rank heads; more only costs time at export
FOLDS = 5
PIXEL_STRIDE = 4  # pixel AUROC on every 4th pixel: the maps are smooth at that scale, and 16x cheaper


@torch.no_grad()
def _components(model, images: torch.Tensor, batch: int = 16):
    """st map (N,1,h4,w4), discriminator probability (same), regional map (N,1,h16,w16), global distance (N,)."""
    head = model.head
    st, prob, region, glob = [], [], [], []
    for i in _progress(range(0, len(images), batch), desc="validation components", leave=False):
        t1, s1, t2, s2 = model.features(_cl(images[i : i + batch]))
        d1, d2 = head.pair_maps(t1[:3], s1, t2, s2)
        m = (d1 + d2).prod(dim=1, keepdim=True) if d2 is not None else d1.prod(dim=1, keepdim=True)
        st.append(m)
        prob.append(torch.sigmoid(head.disc_logit(head.disc_input(d1, d2))) if head.use_disc else torch.ones_like(m))
        region.append(head.region_map(t1, t2))
        glob.append(head.global_score(t1, t2))
    return torch.cat(st), torch.cat(prob), torch.cat(region), torch.cat(glob)


def _smooth(m: torch.Tensor, sigma: float, image_size) -> torch.Tensor:
    """What MapHead does to a map: upsample to the input size, then Gaussian smoothing of ``sigma`` px."""
    return smooth_full(m, image_size, gaussian_kernel(sigma) if sigma > 0 else torch.ones(1))


def _fold_outputs(head, rstpm, region, glob, source: np.ndarray, labels: np.ndarray):
    """Final maps and scores of every validation sample, each fold scored with the other folds' good stats."""
    if head.region_weight == 0 and head.global_weight == 0:
        return fused_outputs(head, rstpm, region, glob, head.map_stats, head.score_stats)
    fold = torch.from_numpy(source % FOLDS)
    good = torch.from_numpy(labels == 0)
    maps, scores = torch.empty_like(rstpm), torch.empty(len(glob))
    for k in range(FOLDS):
        rest, test = good & (fold != k), fold == k
        if not test.any():
            continue
        stats = score_statistics(head, rstpm[rest], region[rest], glob[rest])
        maps[test], scores[test] = fused_outputs(head, rstpm[test], region[test], glob[test], *stats)
    return maps, scores


class _weights:
    """Context manager: the head fuses with the given weights, and gets its own back after."""

    def __init__(self, head, region_weight: float, global_weight: float):
        self.head, self.new = head, (region_weight, global_weight)

    def __enter__(self):
        self.saved = (self.head.region_weight, self.head.global_weight)
        self.head.region_weight, self.head.global_weight = self.new

    def __exit__(self, *exc):
        self.head.region_weight, self.head.global_weight = self.saved


@torch.no_grad()
def select_head(model, cfg, ckpt: dict, fixed: dict | None = None) -> tuple[dict, dict]:
    """(chosen head settings, report): the grid point with the best validation figure. Keys in ``fixed``
    (explicit --head values) are not searched. Ties go to the configured settings, then to fewer changes."""
    fixed = dict(fixed or {})
    data = ckpt["data"]
    cat_dir = Path(data["root"]) / data["category"]
    shared = bool(data.get("validation_shared", True))
    names = data.get("validation")
    if names is None:  # a run from before the calibration/validation split (export splits it first)
        names, shared = data["holdout"], True
    if not names:
        raise ConfigError("--head auto needs held-out good images, and this run has none (holdout_fraction 0?)")
    if shared:
        log.warning("head selection and threshold calibration share the same %d held-out goods (too few to split)",
                    len(names))
    head = model.head
    current = {k: getattr(cfg.model, k) for k in (*HEAD_GRID, *NOT_SEARCHED)}
    grid = {k: (fixed[k],) if k in fixed else v for k, v in HEAD_GRID.items()}
    grid.update({k: (fixed.get(k, current[k]),) for k in NOT_SEARCHED})
    if not head.use_disc:
        grid["st_exponent"] = (current["st_exponent"],)
    if not bool(head.glob_fitted):
        grid["region_weight"] = grid["global_weight"] = (0.0,)
    vset = make_validation_set([cat_dir / p for p in names], cfg, input_spec(cfg), limit=MAX_VALIDATION_GOODS)
    st, prob, region_raw, glob = _components(model, vset.images)
    size = tuple(vset.images.shape[-2:])
    masks = pooled_masks(vset.masks, (size[0] // PIXEL_STRIDE, size[1] // PIXEL_STRIDE))
    sub = slice(PIXEL_STRIDE // 2, None, PIXEL_STRIDE)
    results = []
    for e, sigma in itertools.product(grid["st_exponent"], grid["map_sigma"]):
        rstpm = _smooth(prob if e == 0 else st.pow(e) * prob, sigma, size)
        region = _smooth(region_raw, sigma, size)
        for rw in grid["region_weight"]:
            pixel = None
            for gw in grid["global_weight"]:
                with _weights(head, rw, gw):
                    maps, scores = _fold_outputs(head, rstpm, region, glob, vset.source, vset.labels)
                if pixel is None:  # the map does not depend on the global weight
                    pixel = scores_of(vset.labels, masks, maps[:, :, sub, sub])
                img = round(float(image_auroc(vset.labels, scores.numpy())), 5)
                settings = {"st_exponent": e, "map_sigma": sigma, "region_weight": rw, "global_weight": gw}
                results.append({**settings, "image_auroc": img, "pixel_auroc": pixel["pixel_auroc"],
                                "figure": round(figure(img, pixel["pixel_auroc"]), 5)})
    changes = lambda r: sum(r[k] != current[k] for k in current)  # noqa: E731
    results.sort(key=lambda r: (-r["figure"], changes(r)))
    best = results[0]
    chosen = {k: best[k] for k in current}
    configured = next((r for r in results if all(r[k] == current[k] for k in current)), None)
    report = {
        "method": "grid search on held-out goods + seeded validation anomalies (no test images); "
                  "figure = (image AUROC + pixel AUROC) / 2",
        "selected": chosen, "selected_figures": {k: best[k] for k in ("image_auroc", "pixel_auroc", "figure")},
        "configured": current,
        "configured_figures": {k: configured[k] for k in ("image_auroc", "pixel_auroc", "figure")}
        if configured else None,
        "explicit": fixed, "grid": {k: list(v) for k, v in grid.items()}, "not_searched": list(NOT_SEARCHED),
        "validation_goods": len(vset) // 2, "shared_with_calibration": shared,
        "top5": results[:5],
    }
    # How far the image AUROC alone would move on another validation set of this size: differences below it
    # (the usual case on 40-100 goods) are noise, and the report says so rather than leaving a false precision.
    n_anomalies = int(vset.labels.sum())
    report["image_auroc_se"] = round(auroc_standard_error(best["image_auroc"], n_anomalies,
                                                          len(vset.labels) - n_anomalies), 5)
    report["within_noise"] = bool(configured and best["figure"] - configured["figure"] < report["image_auroc_se"])
    log.info("head auto: %s (validation image AUROC %.4f, pixel AUROC %.4f); configured %s: %s", chosen,
             best["image_auroc"], best["pixel_auroc"], current, report["configured_figures"])
    if report["within_noise"]:
        log.info("head auto: its figure beats the configured head's by less than one standard error of the image "
                 "AUROC (%.3f), so validation cannot tell the two heads apart", report["image_auroc_se"])
    return chosen, report

"""Each metric on tiny hand-made cases with answers worked out by hand (or by a brute-force reference)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edge_inspect.errors import DataError
from edge_inspect.evaluation import metrics as M

# ---------------------------------------------------------------- image level


def test_image_auroc_separated_reversed_and_tied():
    assert M.image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert M.image_auroc([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2]) == 0.0
    assert M.image_auroc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one of four good/defect pairs inverted: 3/4
    assert M.image_auroc([0, 0, 1, 1], [0.1, 0.6, 0.5, 0.9]) == 0.75


def test_image_auroc_rejects_one_class_and_nan():
    with pytest.raises(DataError, match="both good and defective"):
        M.image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN"):
        M.image_auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(DataError, match="differ in length"):
        M.image_auroc([0, 1, 1], [0.1, 0.2])


def test_f1_max_on_a_tiny_list():
    # sorted by score: 0.9 D, 0.8 D, 0.4 G, 0.35 D, 0.2 G, 0.1 G. Cutting below 0.35 flags 4 parts,
    # 3 of them defective: P = 3/4, R = 1, F1 = 6/7 (the best; cutting below 0.8 gives 0.8).
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    f1, thr = M.f1_max(labels, scores)
    assert f1 == pytest.approx(6 / 7)
    assert thr == pytest.approx(0.275)  # half-way between 0.35 and the next lower score 0.2
    ng = M.predict_ng(scores, thr)
    assert ng.tolist() == [False, True, True, True, False, True]


def test_f1_threshold_works_with_the_strict_rule_at_the_lowest_score():
    # best is flagging all four (P = 3/4, R = 1); the threshold must then sit below the lowest score
    f1, thr = M.f1_max([1, 1, 1, 0], [0.1, 0.5, 0.6, 0.55])
    assert f1 == pytest.approx(2 * 0.75 * 1 / 1.75)
    assert M.predict_ng([0.1], thr)[0]


def test_rates_at_threshold_overall_and_per_type():
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.1, 0.5, 0.7, 0.2, 0.9, 0.4, 0.6, 0.5, 0.95]
    types = ["good"] * 4 + ["crack", "crack", "hole", "hole", "hole"]
    r = M.rates_at_threshold(labels, scores, 0.5, types)
    # NG is score > 0.5: good 0.7 is a false reject (0.5 is not); defects 0.4 and 0.5 escape
    assert r["false_reject_rate"] == 0.25 and r["false_rejects"] == 1
    assert r["escape_rate"] == 0.4 and r["escapes"] == 2
    assert r["per_defect_type"] == {
        "crack": {"count": 2, "escapes": 1, "escape_rate": 0.5},
        "hole": {"count": 3, "escapes": 1, "escape_rate": pytest.approx(1 / 3)},
    }
    only_good = M.rates_at_threshold([0, 0], [0.1, 0.9], 0.5)
    assert only_good["escape_rate"] is None and only_good["false_reject_rate"] == 0.5


# ---------------------------------------------------------------- pixel level


def test_pixel_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 12, 10)) < 0.2
    maps = np.round(rng.random((5, 12, 10)) + 0.3 * masks, 1).astype(np.float32)  # many ties
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pixel_auroc_perfect_reversed_and_bad_input():
    masks = np.zeros((2, 4, 4), bool)
    masks[1, 1:3, 1:3] = True
    assert M.pixel_auroc(masks, masks.astype(np.float32)) == 1.0
    assert M.pixel_auroc(masks, (~masks).astype(np.float32)) == 0.0
    with pytest.raises(DataError, match="does not match"):
        M.pixel_auroc(masks, np.zeros((2, 4, 5), np.float32))
    with pytest.raises(DataError, match="defect and good pixels"):
        M.pixel_auroc(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), np.float32))


def test_aupro_by_hand_one_region():
    # 4x4 map, one 2-pixel region scored 0.9 and 0.5; of the 14 good pixels one is 0.8, the rest 0.1.
    # Curve (FPR, PRO): (0,0) (0,.5) [t=.9] (1/14,.5) [t=.8] (1/14,1) [t=.5] (1,1) [t=.1].
    # Area up to FPR .3: .5 * 1/14 + 1 * (.3 - 1/14) = .3 - .5/14; normalised by .3.
    amap = np.full((4, 4), 0.1, np.float32)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[0, 1] = True
    amap[0, 0], amap[0, 1], amap[3, 3] = 0.9, 0.5, 0.8
    assert M.aupro([mask], [amap]) == pytest.approx((0.3 - 0.5 / 14) / 0.3)


def test_aupro_regions_are_8_connected_and_averaged():
    # mask pixels (0,0)+(1,1) touch diagonally: one region; (3,3) is a second region.
    # Only (0,0) is above the good pixels: PRO = mean(1/2, 0) = 0.25 over FPR 0..1 → AUPRO 0.25
    # (4-connectivity would give three regions and 1/3).
    amap = np.full((4, 4), 0.5, np.float32)
    mask = np.zeros((4, 4), bool)
    for y, x in ((0, 0), (1, 1), (3, 3)):
        mask[y, x] = True
        amap[y, x] = 0.1
    amap[0, 0] = 0.9
    curves = M.pixel_curves([mask], [amap])
    assert curves.regions == 2
    assert M.aupro([mask], [amap]) == pytest.approx(0.25)


def test_aupro_perfect_and_inverted_maps():
    masks = np.zeros((3, 8, 8), bool)
    masks[1, 2:4, 2:5] = True
    masks[2, 5:8, 0:2] = True
    masks[2, 0, 7] = True
    assert M.aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    assert M.aupro(masks, (~masks).astype(np.float32)) == pytest.approx(0.0)


def _reference_aupro(masks, maps, max_fpr=0.3):
    """Brute force: every distinct value as threshold, regions via scipy (independent of cv2)."""
    from scipy.ndimage import label

    regions = []
    for i, m in enumerate(masks):
        lab, n = label(m, np.ones((3, 3), int))
        regions += [(i, lab == k + 1) for k in range(n)]
    good = maps[~masks]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fpr.append(float((good >= t).mean()))
        pro.append(float(np.mean([(maps[i][r] >= t).mean() for i, r in regions])))
    fpr.append(1.0)
    pro.append(1.0)
    return M.area_under(fpr, pro, max_fpr) / max_fpr


def test_aupro_exact_and_grid_match_a_brute_force_reference():
    rng = np.random.default_rng(2)
    masks = np.zeros((6, 20, 20), bool)
    for i in range(1, 6):
        y, x = rng.integers(0, 14, 2)
        masks[i, y:y + rng.integers(2, 6), x:x + rng.integers(2, 6)] = True
    maps = (rng.random((6, 20, 20)) + 0.6 * masks * rng.random((6, 20, 20))).astype(np.float32)
    want = _reference_aupro(masks, maps)
    assert 0.05 < want < 0.95  # a non-trivial case
    assert M.aupro(masks, maps) == pytest.approx(want, abs=1e-9)
    grid = M.pixel_curves(masks, maps, exact_max_pixels=0, num_thresholds=300)  # the large-input path
    assert M.aupro(masks, maps, curves=grid) == pytest.approx(want, abs=2e-3)


def test_area_under_interpolates_at_x_max():
    assert M.area_under([0, 1], [0, 1], 0.5) == pytest.approx(0.125)
    assert M.area_under([0, 0, 1], [0, 1, 1], 0.3) == pytest.approx(0.3)  # vertical step at 0
    assert M.area_under([0, 0.2, 1], [1, 1, 1]) == pytest.approx(1.0)


def test_auroc_standard_error_matches_hanley_mcneil_and_the_spread_of_resampled_aurocs():
    # Hanley & McNeil's worked scale: AUROC 0.9 on 76 + 76 samples has a standard error of about 0.026
    assert M.auroc_standard_error(0.9, 76, 76) == pytest.approx(0.0260, abs=5e-4)
    assert M.auroc_standard_error(0.9, 760, 760) < M.auroc_standard_error(0.9, 76, 76) / 3
    assert M.auroc_standard_error(1.0, 10, 10) == 0.0
    # and it describes what it claims: the spread of AUROCs over many draws of that size (binormal scores)
    rng = np.random.default_rng(0)
    d = 1.81  # binormal separation whose AUROC is 0.9
    draws = [roc_auc_score(np.r_[np.zeros(76), np.ones(76)], np.r_[rng.normal(0, 1, 76), rng.normal(d, 1, 76)])
             for _ in range(400)]
    assert np.std(draws) == pytest.approx(M.auroc_standard_error(float(np.mean(draws)), 76, 76), rel=0.2)
    with pytest.raises(DataError, match="both classes"):
        M.auroc_standard_error(0.9, 0, 10)

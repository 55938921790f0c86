"""Operating-point metrics (false rejects vs escapes) on tiny hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.errors import DataError
from edge_inspect.evaluation import metrics as M

# goods 0.1 0.3 0.5, defects 0.4 0.9 (NG when score > threshold)
LABELS = [0, 0, 0, 1, 1]
SCORES = [0.1, 0.3, 0.5, 0.4, 0.9]


def test_curve_by_hand():
    c = M.frr_escape_curve(LABELS, SCORES)
    assert c["thresholds"] == [0.1, 0.3, 0.4, 0.5, 0.9]
    # t=.1: goods .3 .5 NG; t=.3: good .5 NG; t=.4: good .5 NG, defect .4 passes; t=.5: .4 passes; t=.9: all pass
    assert c["false_reject_rate"] == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0, 0])
    assert c["escape_rate"] == pytest.approx([0, 0, 0.5, 0.5, 1])
    assert c["reason"] is None


def test_curve_with_ties_uses_the_strict_rule():
    # a good and a defect tied at 0.5: at t = 0.5 both pass, just below it both are NG
    c = M.frr_escape_curve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8])
    assert c["thresholds"] == [0.2, 0.5, 0.8]
    assert c["false_reject_rate"] == [0.5, 0.0, 0.0]
    assert c["escape_rate"] == [0.0, 0.5, 1.0]


def test_curve_agrees_with_rates_at_threshold_on_random_tied_scores():
    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.3).astype(int)
    scores = np.round(rng.normal(size=200) + 1.5 * labels, 1)  # rounded: many ties
    c = M.frr_escape_curve(labels, scores)
    assert len(c["thresholds"]) == np.unique(scores).size
    for t, frr, esc in zip(c["thresholds"], c["false_reject_rate"], c["escape_rate"], strict=True):
        r = M.rates_at_threshold(labels, scores, t)
        assert (frr, esc) == (r["false_reject_rate"], r["escape_rate"])


def test_curve_without_goods_or_defects_gives_none_with_a_reason():
    only_good = M.frr_escape_curve([0, 0], [0.1, 0.2])
    assert only_good["false_reject_rate"] == [0.5, 0.0] and only_good["escape_rate"] is None
    assert "no defective parts" in only_good["reason"]
    only_bad = M.frr_escape_curve([1, 1], [0.1, 0.2])
    assert only_bad["false_reject_rate"] is None and only_bad["escape_rate"] == [0.5, 1.0]
    assert "no good parts" in only_bad["reason"]


def test_confusion_counts_by_hand():
    # goods .1 .5 .7 .2 → .7 is a false reject (.5 is not: strict rule); defects .4 and .5 escape
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.1, 0.5, 0.7, 0.2, 0.9, 0.4, 0.6, 0.5, 0.95]
    assert M.confusion_counts(labels, scores, 0.5) == {"true_ok": 3, "false_reject": 1, "escape": 2, "caught": 3}


def test_threshold_for_frr_is_the_lowest_within_the_target():
    goods = np.arange(100) / 100  # 0.00 … 0.99
    defects = [0.5, 0.985, 0.995]
    labels = [0] * 100 + [1] * 3
    scores = np.concatenate([goods, defects])
    p = M.threshold_for_frr(labels, scores, 0.01)  # one false reject allowed: only 0.99 above
    assert p["threshold"] == 0.98 and p["false_rejects"] == 1 and p["false_reject_rate"] == 0.01
    assert p["escapes"] == 1 and p["escape_rate"] == pytest.approx(1 / 3)  # 0.5 passes
    assert M.threshold_for_frr(labels, scores, 0.001)["threshold"] == 0.99  # < 1/100: no false reject at all
    assert M.threshold_for_frr(labels, scores, 0.02)["threshold"] == 0.97
    # 0.29 · 100 is 28.999… in floats: the bound must still allow 29 false rejects
    assert M.threshold_for_frr(labels, scores, 0.29)["threshold"] == 0.70


def test_threshold_for_frr_with_ties_never_exceeds_the_target():
    # three goods tied at 0.8: a threshold below 0.8 rejects all three (75 %), at 0.8 none
    p = M.threshold_for_frr([0, 0, 0, 0, 1], [0.1, 0.8, 0.8, 0.8, 0.7], 0.5)
    assert p["threshold"] == 0.8 and p["false_reject_rate"] == 0.0 and p["escape_rate"] == 1.0


def test_threshold_for_frr_without_goods_or_defects():
    p = M.threshold_for_frr([1, 1], [0.1, 0.2], 0.01)
    assert p["threshold"] is None and p["escape_rate"] is None and "no good parts" in p["reason"]
    p = M.threshold_for_frr([0, 0], [0.1, 0.2], 0.01)
    assert p["threshold"] == 0.2 and p["false_reject_rate"] == 0.0
    assert p["escape_rate"] is None and "no defective parts" in p["reason"]
    with pytest.raises(DataError, match="target"):
        M.threshold_for_frr([0], [0.1], 1.5)


def test_zero_escape_point_by_hand():
    # lowest defect 0.4; the highest score below it is 0.3, where only the good 0.5 is rejected
    p = M.zero_escape_point(LABELS, SCORES)
    assert p["threshold"] == 0.3 and p["escapes"] == 0 and p["false_reject_rate"] == pytest.approx(1 / 3)
    # a good tied with the lowest defect must be rejected too
    p = M.zero_escape_point([1, 0, 0], [0.2, 0.2, 0.1])
    assert p["threshold"] == 0.1 and p["false_reject_rate"] == 0.5 and p["escape_rate"] == 0.0


def test_zero_escape_point_when_a_defect_has_the_lowest_score():
    p = M.zero_escape_point([1, 0], [0.1, 0.5])
    assert p["threshold"] < 0.1 and M.predict_ng([0.1], p["threshold"])[0]
    assert p["false_reject_rate"] == 1.0 and p["escape_rate"] == 0.0


def test_zero_escape_point_without_defects_or_goods():
    p = M.zero_escape_point([0, 0], [0.1, 0.2])
    assert p["threshold"] is None and p["false_reject_rate"] is None and "no defective parts" in p["reason"]
    p = M.zero_escape_point([1, 1], [0.3, 0.2])
    assert p["escape_rate"] == 0.0 and p["false_reject_rate"] is None and "no good parts" in p["reason"]


def test_calibration_check_agrees_and_disagrees():
    labels = [0] * 100
    scores = np.arange(100) / 100
    # threshold 0.97: goods 0.98, 0.99 rejected → 2 %, Wilson 90 % interval 0.66 %–5.86 % overlaps 0.2–1.2 %
    c = M.calibration_check(labels, scores, 0.97, 0.005, (0.002, 0.012), 0.9)
    assert c["measured_false_reject_rate"] == 0.02 and c["measured_false_rejects"] == 2 and c["good"] == 100
    assert c["measured_false_reject_interval"] == pytest.approx([0.006641, 0.058648], abs=1e-6)
    assert c["expected_false_reject_rate"] == 0.005 and c["expected_false_reject_interval"] == [0.002, 0.012]
    assert c["consistent"] is True and "expected_escape_rate" not in c
    # threshold 0.89: 10 % rejected, interval 6.1 %–16.0 %: does not overlap
    c = M.calibration_check(labels, scores, 0.89, 0.005, (0.002, 0.012), 0.9)
    assert c["measured_false_reject_rate"] == 0.1 and c["consistent"] is False


def test_calibration_check_escapes_and_no_goods():
    c = M.calibration_check([1, 1, 1, 1], [0.1, 0.6, 0.7, 0.8], 0.5, 0.005, (0.002, 0.012), 0.9,
                            expected_escape_rate=0.1, escape_interval=(0.05, 0.2))
    assert c["measured_false_reject_rate"] is None and c["consistent"] is None and "no good parts" in c["reason"]
    assert c["measured_escape_rate"] == 0.25 and c["defective"] == 4
    assert c["measured_escape_interval"] == pytest.approx([0.057907, 0.643832], abs=1e-6)
    assert c["escape_consistent"] is True


def test_summary_marks_the_threshold_in_force_and_labels_suggestions_as_test_set_only():
    op = M.operating_point_summary(LABELS, SCORES, 0.45)
    assert op["curve"]["in_force"] == {"threshold": 0.45, "false_reject_rate": pytest.approx(1 / 3),
                                       "escape_rate": 0.5, "false_rejects": 1, "escapes": 1}
    assert op["confusion"] == {"threshold": 0.45, "true_ok": 2, "false_reject": 1, "escape": 1, "caught": 1}
    sug = op["suggested_thresholds"]
    assert sug["for_information_only"] is True and "test set" in sug["measured_on"]
    assert "edge-inspect calibrate" in sug["note"]
    assert [p["target_false_reject_rate"] for p in sug["points"]] == list(M.FRR_TARGETS)
    assert all(p["threshold"] == 0.5 for p in sug["points"])  # 3 goods: any target < 1/3 needs 0 false rejects
    assert op["escape_rate_at_1pct_false_rejects"]["escape_rate"] == 0.5
    assert op["false_reject_rate_at_zero_escapes"]["threshold"] == 0.3


def test_summary_of_nothing_does_not_crash():
    op = M.operating_point_summary([], [], 0.5)
    assert op["curve"]["thresholds"] == [] and op["curve"]["false_reject_rate"] is None
    assert op["confusion"] == {"threshold": 0.5, "true_ok": 0, "false_reject": 0, "escape": 0, "caught": 0}
    assert op["suggested_thresholds"]["resolution"] is None
    assert op["escape_rate_at_1pct_false_rejects"]["threshold"] is None
    assert op["false_reject_rate_at_zero_escapes"]["threshold"] is None


# ---------------------------------------------------------------- the one ok/ng rule


def test_every_judgement_follows_the_rule_in_decision(monkeypatch):
    """predict_ng, the curve, the suggestions and label_at ask decision.is_ng: change the rule there (here
    to "at or above") and every one of them follows, and so does the line's Thresholds.label."""
    from edge_inspect import decision
    from edge_inspect.decision import Thresholds

    y, s = [0, 0, 1, 1], [0.1, 0.2, 0.2, 0.9]
    assert M.predict_ng(s, 0.2).tolist() == [False, False, False, True]
    assert M.label_at(0.2, 0.2) == "ok"
    monkeypatch.setattr(decision, "is_ng", lambda scores, t: np.asarray(scores, np.float64) >= t)
    assert Thresholds(image=0.2, pixel=0.0).label(0.2) == "ng"
    assert M.predict_ng(s, 0.2).tolist() == [False, True, True, True]
    assert M.label_at(0.2, 0.2) == "ng"
    curve = M.frr_escape_curve(y, s)
    assert curve["false_reject_rate"] == [1.0, 0.5, 0.0] and curve["escape_rate"] == [0.0, 0.0, 0.5]
    assert M.confusion_counts(y, s, 0.2) == {"true_ok": 1, "false_reject": 1, "escape": 0, "caught": 2}


def test_predict_ng_keeps_the_shape_and_judges_non_finite_scores_alone():
    x = np.array([[np.nan, 1.0, np.inf], [-np.inf, 0.5, 2.0]])
    assert M.predict_ng(x, 0.5).tolist() == [[False, True, True], [False, False, True]]
    assert M.predict_ng([], 0.5).shape == (0,)


def test_sweep_is_fast_for_thousands_of_tied_scores():
    import time

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 5000)
    s = np.round(rng.normal(size=5000) + y, 3)
    t0 = time.perf_counter()
    op = M.operating_point_summary(y, s, 0.5)
    assert time.perf_counter() - t0 < 3.0  # ~0.3 s; K·N comparisons through the rule would take minutes
    thresholds = np.array(op["curve"]["thresholds"])
    k = len(thresholds) // 2
    assert op["curve"]["false_reject_rate"][k] == pytest.approx(float((s[y == 0] > thresholds[k]).mean()))

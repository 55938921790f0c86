"""The good-score model behind the image threshold: known distributions, the t distribution, intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_inspect.errors import ConfigError, DataError
from edge_inspect.threshold_model import (
    fit_good_scores,
    operating_point,
    recent_false_reject_rate,
    t_cdf,
    t_ppf,
    wilson_interval,
    yeo_johnson,
    yeo_johnson_inverse,
)


@pytest.mark.parametrize("df", [1, 2, 5, 19, 150])
def test_t_distribution_matches_closed_forms_and_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    for t in (-4.0, -0.3, 0.0, 1.7, 12.0):
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-9)
    for p in (0.6, 0.9, 0.995, 0.999):
        assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)
    assert t_ppf(0.05, df) == pytest.approx(-t_ppf(0.95, df))


def test_t_with_one_degree_of_freedom_is_cauchy():
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    assert t_ppf(0.75, 1) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("lam", [0.0, 0.35, 1.0, 1.6, 2.0])
def test_yeo_johnson_inverts_and_lambda_one_is_identity(lam):
    z = np.linspace(-4, 6, 41)
    y = yeo_johnson(z, lam)
    assert np.all(np.diff(y) > 0)  # monotonic: thresholds keep their order
    assert [yeo_johnson_inverse(v, lam) for v in y] == pytest.approx(list(z), abs=1e-9)
    if lam == 1.0:
        assert y == pytest.approx(z)


def test_normal_scores_give_the_normal_quantile_and_no_transform():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, 5000)
    op = operating_point(x, target_frr=0.01)
    assert op.model.yj_lambda == pytest.approx(1.0, abs=0.1)
    assert op.threshold == pytest.approx(10.0 + 2.0 * 2.3263, abs=0.25)
    assert op.expected_frr == pytest.approx(0.01, rel=1e-3)
    assert op.frr_interval[0] < 0.01 < op.frr_interval[1]
    assert op.frr_interval[1] - op.frr_interval[0] < 0.005  # 5000 scores pin it down


def test_skewed_scores_are_transformed_and_the_tail_holds_on_new_scores():
    rng = np.random.default_rng(2)
    x = rng.lognormal(0.0, 0.5, 200)  # right-skewed, like anomaly scores
    op = operating_point(x, target_frr=0.01)
    assert op.model.yj_lambda < 0.8  # compresses the right tail
    fresh = rng.lognormal(0.0, 0.5, 200_000)
    assert (fresh > op.threshold).mean() == pytest.approx(0.01, abs=0.006)
    plain = x.mean() + 2.3263 * x.std()  # a normal fit under-estimates this tail
    assert (fresh > plain).mean() > 0.015


def test_expected_false_reject_rate_over_repeated_calibrations_is_the_target():
    """The predictive bound: over many calibrations from 8 normal scores, new parts exceed it 2 % of the time."""
    rng = np.random.default_rng(3)
    rates = []
    for _ in range(400):
        m = fit_good_scores(rng.normal(0, 1, 8))
        t = m.threshold_for(0.02)
        rates.append(0.5 * math.erfc(t / math.sqrt(2)))
    assert np.mean(rates) == pytest.approx(0.02, abs=0.004)


def test_few_scores_give_a_wider_threshold_and_interval():
    rng = np.random.default_rng(4)
    pop = rng.normal(0, 1, 400)
    few, many = operating_point(pop[:6]), operating_point(pop)
    assert few.threshold - few.model.center > (many.threshold - many.model.center) * 0.9
    width = lambda op: op.frr_interval[1] - op.frr_interval[0]  # noqa: E731
    assert width(few) > 2 * width(many)
    assert few.threshold_interval[0] < few.threshold < few.threshold_interval[1]


def test_lower_bound_clamps_the_threshold():
    op = operating_point([0.0, 0.0001, 0.0002, 0.00015], target_frr=0.4, lower_bound=1.0)
    assert op.threshold == 1.0 and op.expected_frr < 0.4


@pytest.mark.parametrize(("scores", "kwargs", "error", "match"), [
    ([1.0], {}, DataError, "at least 2"),
    ([1.0, float("nan")], {}, DataError, "NaN or inf"),
    ([3.0, 3.0, 3.0], {}, DataError, "equal"),
    ([1.0, 2.0], {"target_frr": 0.0}, ConfigError, "false-reject rate"),
    ([1.0, 2.0], {"target_frr": 0.6}, ConfigError, "false-reject rate"),
    ([1.0, 2.0], {"confidence": 1.0}, ConfigError, "confidence"),
])
def test_bad_input_is_refused(scores, kwargs, error, match):
    with pytest.raises(error, match=match):
        operating_point(scores, **kwargs)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 24, 0.9)
    assert lo == 0.0 and hi == pytest.approx(0.1013, abs=1e-3)
    lo, hi = wilson_interval(5, 10, 0.95)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-3), pytest.approx(0.7634, abs=1e-3))


def test_recent_rate_reads_the_calibration_without_drift_and_rises_with_it():
    rng = np.random.default_rng(5)
    op = operating_point(rng.normal(0, 1, 300), target_frr=0.005)
    same = rng.normal(0, 1, 500)
    ok = same[same <= op.threshold]  # what the line judges OK
    steady = recent_false_reject_rate(op.model, ok, op.threshold)
    assert steady["estimated_frr"] < 0.02  # below the drift alert level (the estimate's spread: 0.1-1.5 %)
    assert abs(steady["shift_sigma"]) < 0.2
    moved = rng.normal(1.5, 1, 500)
    drifted = recent_false_reject_rate(op.model, moved[moved <= op.threshold], op.threshold)
    assert drifted["shift_sigma"] > 1.0
    assert drifted["estimated_frr"] > 0.05
    with pytest.raises(DataError, match="at least 10"):
        recent_false_reject_rate(op.model, [0.1] * 5, op.threshold)

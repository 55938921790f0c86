"""Calibration from held-out scores: thresholds, statistics, normalisation, degenerate inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_inspect.errors import ConfigError, DataError
from edge_inspect.evaluation.calibration import calibrate
from edge_inspect.manifest import Calibration


def test_image_threshold_is_set_for_the_target_false_reject_rate():
    rng = np.random.default_rng(0)
    good = rng.normal(2.0, 0.5, 400)
    cal = calibrate(good, target_frr=0.01)
    tm = cal.threshold_model
    assert cal.image_threshold == pytest.approx(2.0 + 0.5 * 2.326, abs=0.1)
    assert tm.target_frr == 0.01 and tm.expected_frr == pytest.approx(0.01, rel=1e-3) and tm.n == 400
    assert tm.frr_interval[0] < 0.01 < tm.frr_interval[1]
    assert tm.threshold_interval[0] < cal.image_threshold < tm.threshold_interval[1]
    assert "target false-reject rate 1.000%" in cal.image_threshold_method
    assert "400 good scores" in cal.image_threshold_method
    assert cal.image_threshold_f1 is None and cal.defect_scores is None and cal.escape_rate is None


def test_negative_scores_are_fine():
    cal = calibrate([-3.0, -2.5, -2.0, -1.0, -2.2])  # fused z-scores can be negative
    assert cal.image_threshold > -1.0


def test_score_stats():
    good = np.arange(1, 1001, dtype=float)  # 1..1000
    cal = calibrate(good)
    s = cal.good_scores
    assert (s.count, s.min, s.max, s.mean) == (1000, 1.0, 1000.0, 500.5)
    assert s.std == pytest.approx(np.std(good))
    assert set(s.quantiles) == {"0.5", "0.9", "0.95", "0.99", "0.995"}
    assert s.quantiles["0.5"] == pytest.approx(500.5)
    assert s.quantiles["0.99"] == pytest.approx(990.01)


def test_f1_threshold_and_escape_rate_from_labelled_defects():
    good = [0.1, 0.2, 0.3, 0.15, 0.25]
    cal = calibrate(good, defect_scores=[0.5, 0.6, 100.0, 200.0], target_frr=0.1)
    assert 0.3 < cal.image_threshold < 100.0  # still the model's threshold, not the F1 one
    assert cal.image_threshold_f1 == pytest.approx(0.4)  # half-way between 0.3 and 0.5
    assert cal.defect_scores.count == 4 and cal.defect_scores.min == 0.5
    escaped = sum(d <= cal.image_threshold for d in (0.5, 0.6, 100.0, 200.0))
    assert cal.escape_rate == escaped / 4
    lo, hi = cal.escape_interval
    assert lo <= cal.escape_rate <= hi


def test_pixel_threshold_from_good_maps_and_fallback():
    maps = np.arange(1000, dtype=np.float32).reshape(10, 1, 10, 10)  # pixels 0..999
    cal = calibrate([1.0, 2.0], good_maps=maps, pixel_quantile=0.999)
    assert cal.pixel_threshold == pytest.approx(998.001)
    as_list = calibrate([1.0, 2.0], good_maps=list(maps[:, 0]), pixel_quantile=0.5)
    assert as_list.pixel_threshold == pytest.approx(499.5)
    no_maps = calibrate([1.0, 2.0])
    assert no_maps.pixel_threshold == no_maps.image_threshold
    assert "no good maps" in no_maps.image_threshold_method


def test_normalisation_maps_median_to_0_and_threshold_to_half():
    cal = calibrate([1.0, 2.0, 3.0, 4.0, 5.0])
    t = cal.image_threshold

    def norm(score):
        return float(np.clip((score - t) / (cal.norm_max - cal.norm_min) + 0.5, 0, 1))

    assert norm(3.0) == pytest.approx(0.0)
    assert norm(t) == pytest.approx(0.5)
    assert norm(t + (t - 3.0)) == pytest.approx(1.0)


def test_map_span_is_the_score_span_of_map_maxima_whatever_the_image_score():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 0.2, size=(20, 8, 8))
    maps[np.arange(20), 3, 4] = np.linspace(0.3, 0.7, 20)  # one peak per map: maxima 0.3..0.7
    plain = calibrate(maps.max(axis=(1, 2)), good_maps=maps, target_frr=0.1)
    assert plain.map_norm_span == pytest.approx(plain.norm_max - plain.norm_min)
    fused = calibrate(rng.normal(size=20), good_maps=maps, target_frr=0.1)  # z-scored image scores
    assert fused.map_norm_span == pytest.approx(plain.map_norm_span)
    assert fused.norm_max - fused.norm_min != pytest.approx(plain.map_norm_span)
    assert calibrate([1.0, 2.0]).map_norm_span is None  # no maps: heat maps fall back to the score span


def test_result_round_trips_through_the_manifest_schema():
    cal = calibrate(np.linspace(0, 1, 50), defect_scores=[2.0, 3.0], good_maps=np.zeros((2, 4, 4)))
    assert Calibration.model_validate_json(cal.model_dump_json()) == cal


def test_few_good_scores_are_logged_with_the_fix(caplog):
    with caplog.at_level(logging.WARNING):
        cal = calibrate([0.1, 0.2, 0.3])
    assert "only 3 good scores" in caplog.text and "edge-inspect calibrate" in caplog.text
    assert cal.threshold_model.n == 3


def test_bounds_are_kept_and_clamp_the_thresholds():
    cal = calibrate([0.0, 0.0, 1e-4, 2e-4], good_maps=np.zeros((4, 2, 2)), target_frr=0.4,
                    score_lower_bound=0.0, map_lower_bound=0.0)
    assert cal.score_lower_bound == 0.0 and cal.map_lower_bound == 0.0
    assert cal.image_threshold >= 0.0 and cal.pixel_threshold >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"good_scores": [1.0]}, DataError, "at least 2"),
        ({"good_scores": []}, DataError, "at least 2"),
        ({"good_scores": [1.0, float("nan")]}, DataError, "NaN"),
        ({"good_scores": [1.0, 2.0], "defect_scores": []}, DataError, "defect_scores"),
        ({"good_scores": [1.0, 2.0], "defect_scores": [float("inf")]}, DataError, "NaN or inf"),
        ({"good_scores": [1.0, 2.0], "good_maps": np.full((1, 2, 2), np.nan)}, DataError, "good_maps"),
        ({"good_scores": [1.0, 2.0], "good_maps": []}, DataError, "no anomaly maps"),
        ({"good_scores": ["a", "b"]}, DataError, "not a list of numbers"),
        ({"good_scores": [2.0, 2.0, 2.0]}, DataError, "equal"),
        ({"good_scores": [1.0, 2.0], "target_frr": 0.0}, ConfigError, "false-reject rate"),
        ({"good_scores": [1.0, 2.0], "pixel_quantile": 1.5}, ConfigError, "pixel_quantile"),
    ],
)
def test_degenerate_inputs_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        calibrate(**kwargs)

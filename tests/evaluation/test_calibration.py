"""Calibration from held-out scores: thresholds, statistics, normalisation, degenerate inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_inspect.errors import ConfigError, DataError
from edge_inspect.evaluation.calibration import calibrate
from edge_inspect.manifest import Calibration


def test_image_threshold_is_quantile_times_margin():
    cal = calibrate([1.0, 2.0, 3.0, 4.0, 5.0], quantile=0.5, margin=1.05)
    assert cal.image_threshold == pytest.approx(3.15)
    assert "quantile 0.5 of 5 good scores x margin 1.05" in cal.image_threshold_method
    assert cal.image_threshold_f1 is None and cal.defect_scores is None


def test_negative_quantile_is_widened_upwards():
    cal = calibrate([-3.0, -2.0, -1.0], quantile=1.0, margin=1.1)
    assert cal.image_threshold == pytest.approx(-0.9)


def test_score_stats():
    good = np.arange(1, 1001, dtype=float)  # 1..1000
    cal = calibrate(good)
    s = cal.good_scores
    assert (s.count, s.min, s.max, s.mean) == (1000, 1.0, 1000.0, 500.5)
    assert s.std == pytest.approx(np.std(good))
    assert set(s.quantiles) == {"0.5", "0.9", "0.95", "0.99", "0.995"}
    assert s.quantiles["0.5"] == pytest.approx(500.5)
    assert s.quantiles["0.99"] == pytest.approx(990.01)
    assert cal.image_threshold == pytest.approx(995.005 * 1.05)


def test_f1_threshold_from_labelled_defects():
    cal = calibrate([0.1, 0.2, 0.3], defect_scores=[0.5, 0.6], quantile=1.0, margin=1.0)
    assert cal.image_threshold == pytest.approx(0.3)  # still the one in force
    assert cal.image_threshold_f1 == pytest.approx(0.4)  # half-way between 0.3 and 0.5
    assert cal.defect_scores.count == 2 and cal.defect_scores.min == 0.5


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
    cal = calibrate([1.0, 2.0, 3.0, 4.0, 5.0], quantile=1.0, margin=1.0)  # threshold 5, median 3

    def norm(score):
        return float(np.clip((score - cal.image_threshold) / (cal.norm_max - cal.norm_min) + 0.5, 0, 1))

    assert norm(3.0) == pytest.approx(0.0)
    assert norm(5.0) == pytest.approx(0.5)
    assert norm(7.0) == pytest.approx(1.0)
    constant = calibrate([2.0, 2.0, 2.0])  # no spread: the scale must still be positive
    assert constant.norm_max > constant.norm_min


def test_map_span_is_the_score_span_of_map_maxima_whatever_the_image_score():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 0.2, size=(20, 8, 8))
    maps[np.arange(20), 3, 4] = np.linspace(0.3, 0.7, 20)  # one peak per map: maxima 0.3..0.7
    plain = calibrate(maps.max(axis=(1, 2)), good_maps=maps, quantile=0.9, margin=1.05)
    assert plain.map_norm_span == pytest.approx(plain.norm_max - plain.norm_min)
    fused = calibrate(rng.normal(size=20), good_maps=maps, quantile=0.9, margin=1.05)  # z-scored image scores
    assert fused.map_norm_span == pytest.approx(plain.map_norm_span)
    assert fused.norm_max - fused.norm_min != pytest.approx(plain.map_norm_span)
    assert calibrate([1.0, 2.0]).map_norm_span is None  # no maps: heat maps fall back to the score span


def test_result_round_trips_through_the_manifest_schema():
    cal = calibrate(np.linspace(0, 1, 50), defect_scores=[2.0, 3.0], good_maps=np.zeros((2, 4, 4)))
    assert Calibration.model_validate_json(cal.model_dump_json()) == cal


def test_few_scores_for_the_quantile_are_logged(caplog):
    with caplog.at_level(logging.WARNING):
        calibrate([0.1, 0.2, 0.3], quantile=0.995)
    assert "too few" in caplog.text


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
        ({"good_scores": [1.0, 2.0], "margin": 0.9}, ConfigError, "margin"),
        ({"good_scores": [1.0, 2.0], "quantile": 1.5}, ConfigError, "quantile"),
    ],
)
def test_degenerate_inputs_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        calibrate(**kwargs)

"""The drift watch: recent OK scores against the calibration's good-score model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edge_inspect.errors import ConfigError
from edge_inspect.health import drift as drift_mod
from edge_inspect.health.drift import DriftMonitor, reference_model
from edge_inspect.health.settings import DriftSettings
from edge_inspect.manifest import Calibration, ScoreStats, ThresholdModel, utc_now
from edge_inspect.protocol.messages import check_status
from edge_inspect.settings import load_settings
from edge_inspect.threshold_model import operating_point

TARGET = 0.01


def _stats(x) -> ScoreStats:
    return ScoreStats(count=len(x), mean=float(np.mean(x)), std=float(np.std(x)), min=float(np.min(x)),
                      max=float(np.max(x)))


def calibration(scores, target=TARGET, with_model=True) -> Calibration:
    """A schema-3 calibration (threshold for ``target`` from a fitted good-score model) or, without the
    model, an older one with the same threshold and only the good-score statistics."""
    op = operating_point(scores, target_frr=target)
    tm = None
    if with_model:
        m = op.model
        tm = ThresholdModel(n=m.n, center=m.center, scale=m.scale, yj_lambda=m.yj_lambda, mean=m.mean, std=m.std,
                            target_frr=target, expected_frr=op.expected_frr, confidence=op.confidence,
                            frr_interval=op.frr_interval, threshold_interval=op.threshold_interval,
                            source="test goods", calibrated_at=utc_now())
    return Calibration(image_threshold=op.threshold, image_threshold_method="t-predictive",
                       pixel_threshold=op.threshold, good_scores=_stats(scores), norm_min=float(np.min(scores)),
                       norm_max=float(np.max(scores)) + 1.0, threshold_model=tm)


@pytest.fixture(scope="module")
def cal() -> Calibration:
    return calibration(np.random.default_rng(0).normal(1.0, 0.1, 200))


def feed(monitor, cal, scores, context="ctx", threshold=None):
    """Judge ``scores`` at ``threshold`` (default: the calibration's) the way the pipeline does, and observe them."""
    thr = cal.image_threshold if threshold is None else threshold
    for s in scores:
        monitor.observe("ng" if s > thr else "ok", float(s), thr, cal, context)


def test_same_line_as_at_calibration_reads_ok_near_the_target(cal):
    mon = DriftMonitor(DriftSettings())
    feed(mon, cal, np.random.default_rng(1).normal(1.0, 0.1, 600))
    snap = mon.snapshot()
    assert snap["state"] == "ok" and snap["n"] == 500 and snap["window"] == 500
    assert snap["target_frr"] == TARGET and snap["alert_frr"] == pytest.approx(0.04)  # max(4 × 1 %, 2 %)
    assert 0.003 < snap["estimated_frr"] < 0.03, snap
    assert abs(snap["shift_sigma"]) < 0.3 and snap["calibration_median"] == pytest.approx(1.0, abs=0.02)
    assert snap["median"] == pytest.approx(1.0, abs=0.03) and snap["threshold"] == cal.image_threshold
    assert 0.0 <= snap["ng_share"] < 0.04


def test_shifted_scores_read_drift_with_a_warning_and_back_with_an_info(cal, caplog):
    mon = DriftMonitor(DriftSettings(window=200, min_samples=50, check_every=20))
    rng = np.random.default_rng(2)
    feed(mon, cal, rng.normal(1.0, 0.1, 100))
    assert mon.state == "ok"
    with caplog.at_level(logging.INFO, logger="edge_inspect.health.drift"):
        feed(mon, cal, rng.normal(1.15, 0.1, 600))  # lighting changed: good parts score 1.5 σ higher
        snap = mon.snapshot()
        assert snap["state"] == "drift" and snap["estimated_frr"] > 0.04 and snap["shift_sigma"] > 0.8, snap
        assert snap["ng_share"] > 0.1  # the share of NG the line sees rises with it
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "estimated false-reject rate" in warnings[0].getMessage()
        assert f"{100 * 0.04:.2f} %" in warnings[0].getMessage()  # names the alert level it crossed
        feed(mon, cal, rng.normal(1.0, 0.1, 600))  # fixed
    assert mon.state == "ok"
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("back to normal" in m for m in infos)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # one transition, one warning


def test_warming_up_below_min_samples_has_no_estimate(cal):
    mon = DriftMonitor(DriftSettings(min_samples=50))
    feed(mon, cal, np.full(49, 1.0))
    snap = mon.snapshot()
    assert snap["state"] == "warming_up" and snap["n"] == 49
    assert snap["estimated_frr"] is None and snap["median"] is None and snap["shift_sigma"] is None
    assert snap["target_frr"] == TARGET  # known from the start
    feed(mon, cal, np.full(1, 1.0))
    assert mon.snapshot()["state"] == "ok"  # the first check comes as soon as there are enough scores


def test_a_new_model_or_threshold_starts_a_new_window_and_reset_clears_it(cal):
    mon = DriftMonitor(DriftSettings(min_samples=10))
    feed(mon, cal, np.random.default_rng(3).normal(1.0, 0.1, 40), context="thresholds-1")
    assert mon.snapshot()["n"] > 30 and mon.state == "ok"
    feed(mon, cal, [1.0], context="thresholds-2", threshold=cal.image_threshold + 1.0)
    snap = mon.snapshot()
    assert snap["n"] == 1 and snap["state"] == "warming_up" and snap["threshold"] == cal.image_threshold + 1.0
    mon.reset()
    assert mon.snapshot()["n"] == 0 and mon.snapshot()["ng_share"] is None
    feed(mon, cal, [1.0], context="thresholds-2")  # same context after a reset: still a new window
    assert mon.snapshot()["n"] == 1


def test_the_estimate_is_computed_every_check_every_verdicts_not_per_frame(cal, monkeypatch):
    calls = []
    real = drift_mod.recent_false_reject_rate
    monkeypatch.setattr(drift_mod, "recent_false_reject_rate", lambda *a: calls.append(1) or real(*a))
    mon = DriftMonitor(DriftSettings(min_samples=50, check_every=50))
    feed(mon, cal, np.random.default_rng(4).normal(1.0, 0.1, 400))
    assert 5 <= len(calls) <= 9, len(calls)  # ~ (400 − 50) / 50 + 1, not 400


def test_ng_share_and_unknown_verdicts(cal):
    mon = DriftMonitor(DriftSettings(window=20, min_samples=10))
    for i in range(40):
        mon.observe("ng" if i % 4 == 0 else "ok", 1.0, cal.image_threshold, cal, "c")
        mon.observe("unknown", None, cal.image_threshold, cal, "c")  # no score: not part of the statistics
    snap = mon.snapshot()
    assert snap["ng_share"] == pytest.approx(0.25) and snap["n"] == 20


def test_older_manifest_without_a_threshold_model_uses_its_good_score_statistics():
    scores = np.random.default_rng(5).normal(2.0, 0.5, 100)
    old = calibration(scores, with_model=False)
    ref = reference_model(old)
    assert (ref.n, ref.yj_lambda, ref.mean, ref.std) == (100, 1.0, 0.0, 1.0)
    assert ref.center == pytest.approx(2.0, abs=0.15) and ref.scale == pytest.approx(0.5, abs=0.1)
    mon = DriftMonitor(DriftSettings())
    line = np.random.default_rng(6).permutation(np.tile(scores, 3))  # today's parts score like the calibration's
    feed(mon, old, line)
    snap = mon.snapshot()
    # the target is the statistics' own rate at the manifest's threshold
    assert snap["state"] == "ok" and 0.001 < snap["target_frr"] < 0.03 and snap["estimated_frr"] < snap["alert_frr"]
    assert snap["shift_sigma"] == pytest.approx(0.0, abs=0.15)
    feed(mon, old, line + 0.6)  # 1.2 σ higher
    assert mon.state == "drift"


def test_off_and_unavailable(cal):
    off = DriftMonitor(DriftSettings(enabled=False))
    feed(off, cal, np.full(100, 1.0))
    assert off.snapshot()["state"] == "off" and off.snapshot()["n"] == 0
    lonely = cal.model_copy(update={"threshold_model": None,
                                    "good_scores": ScoreStats(count=1, mean=1.0, std=0.0, min=1.0, max=1.0)})
    mon = DriftMonitor(DriftSettings(min_samples=10))
    feed(mon, lonely, np.full(100, 1.0))
    assert mon.snapshot()["state"] == "unavailable" and mon.snapshot()["estimated_frr"] is None


def test_configured_alert_level_and_the_block_is_valid_heartbeat_json(cal):
    mon = DriftMonitor(DriftSettings(alert_frr=0.5, min_samples=10))
    feed(mon, cal, np.random.default_rng(8).normal(1.15, 0.1, 200))
    snap = mon.snapshot()
    assert snap["alert_frr"] == 0.5 and snap["state"] == "ok"  # the shift is there, but below this alert level
    json.dumps(snap, allow_nan=False)
    check_status({"state": "running", "drift": snap})


@pytest.mark.parametrize("toml, field", [
    ("[drift]\nwindow = 5\n", "drift.window"),
    ("[drift]\nwindow = 100\nmin_samples = 200\n", "min_samples"),
    ("[drift]\nalert_frr = 1.5\n", "drift.alert_frr"),
    ("[drift]\ncheck_every = 0\n", "drift.check_every"),
    ("[drift]\nwindwo = 100\n", "drift.windwo"),
])
def test_bad_drift_settings_are_one_line(tmp_path, toml, field):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(cfg)
    ok = tmp_path / "ok.toml"
    ok.write_text("[drift]\nwindow = 1000\nmin_samples = 100\ncheck_every = 25\nalert_frr = 0.03\n")
    d = load_settings(ok).drift
    assert (d.window, d.min_samples, d.check_every, d.alert_frr) == (1000, 100, 25, 0.03)

"""Pipeline stats: rolling latency percentiles, fps, counters, periodic reporting."""

from __future__ import annotations

import logging

import pytest

from edge_inspect.health.stats import LatencyWindow, PeriodicReporter, PipelineStats


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def test_latency_window_percentiles_and_rolling():
    win = LatencyWindow(size=100)
    assert win.summary() == {"median": 0.0, "p99": 0.0, "mean": 0.0, "count": 0}
    for v in range(1, 101):
        win.add(v)
    s = win.summary()
    assert s["median"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01) and s["count"] == 100
    for _ in range(100):  # the window keeps only the last 100 samples
        win.add(1000.0)
    s = win.summary()
    assert s["median"] == 1000.0 and s["p99"] == 1000.0 and s["count"] == 200


def test_counters_and_fps_with_fake_clock():
    clock = FakeClock()
    stats = PipelineStats(fps_window_s=5.0, clock=clock)
    for i in range(11):  # 11 verdicts 0.1 s apart: 10 fps
        stats.mark_verdict("ng" if i % 2 else "ok")
        clock.t += 0.1
    assert stats.fps() == pytest.approx(10.0)
    assert stats.mean_fps() == pytest.approx(10.0)
    c = stats.snapshot()["counters"]
    assert (c["verdicts_out"], c["ok"], c["ng"], c["unknown"]) == (11, 6, 5, 0)
    clock.t += 10.0  # nothing for 10 s: the rolling rate falls to 0, the run mean does not
    assert stats.fps() == 0.0 and stats.mean_fps() == pytest.approx(10.0)
    stats.incr("dropped_queue", 3)
    assert stats.get("dropped_queue") == 3
    assert stats.snapshot()["uptime_s"] == pytest.approx(11.1)


def test_latency_per_stage_and_log_line():
    stats = PipelineStats()
    stats.record_many({"infer": 10.0, "preprocess": 2.0})
    stats.record("infer", 30.0)
    lat = stats.latency()
    assert lat["infer"]["median"] == 20.0 and lat["infer"]["count"] == 2 and lat["preprocess"]["p99"] == 2.0
    stats.incr("frames_in", 4)
    stats.mark_verdict("unknown")
    line = stats.log_line()
    assert "in=4" in line and "unknown=1" in line and "infer=20.0/" in line


def test_periodic_reporter(caplog):
    clock = FakeClock(0.0)
    calls = []
    rep = PeriodicReporter(10.0, lambda: calls.append(clock.t), clock=clock)
    for t in (1, 9.9, 10.0, 15, 19.9, 20.1):
        clock.t = t
        rep.tick()
    assert calls == [10.0, 20.1]

    def boom():
        raise RuntimeError("report broke")

    bad = PeriodicReporter(1.0, boom, clock=clock)
    clock.t += 5
    with caplog.at_level(logging.ERROR):
        assert bad.tick() is True  # the exception is logged, not raised
    assert "periodic report failed" in caplog.text

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


def test_drop_watch_warns_over_the_share_then_stays_quiet_for_a_while(caplog):
    import logging

    from edge_inspect.health.stats import DropWatch

    now = [0.0]
    watch = DropWatch(0.1, min_frames=20, quiet_s=10.0, clock=lambda: now[0])
    assert watch.observe(10, 9) is None  # fewer than 20 frames seen: no judgement yet
    with caplog.at_level(logging.WARNING, logger="edge_inspect.health.stats"):
        line = watch.observe(20, 30)  # 30 of 50 frames dropped
    assert line and "30 of the last 50 frames were dropped (60 %" in line and caplog.records
    assert watch.observe(40, 60) is None  # still bad, but said a moment ago
    now[0] = 11.0
    assert watch.observe(60, 90) is not None and watch.warnings == 2
    assert watch.observe(100, 91) is None  # 1 of 41: fine
    assert DropWatch(None).observe(0, 1000) is None  # switched off


def test_linked_counters_are_read_from_their_owner_not_copied():
    owner = {"dropped_gap": 3, "reconnects": 1}
    s = PipelineStats()
    s.link_counters(lambda: dict(owner))
    s.incr("frames_in", 5)
    owner["dropped_gap"] = 7
    snap = s.snapshot()["counters"]
    assert (snap["dropped_gap"], snap["reconnects"], snap["frames_in"]) == (7, 1, 5)
    assert s.get("dropped_gap") == 7 and s.get("frames_in") == 5


def test_release_free_memory_is_safe_to_call():
    from edge_inspect.health.memory import release_free_memory

    assert release_free_memory() in (True, False)

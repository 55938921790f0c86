"""The concurrent pipeline with fakes: modes, drops, errors, timeouts, camera faults, stop, reload, status."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.errors import CameraError, ModelError
from edge_inspect.manifest import load_manifest, save_manifest
from edge_inspect.pipeline.runner import Pipeline
from edge_inspect.settings import Settings
from tests.fixtures.tiny_model import make_tiny_model
from tests.pipeline.fakes import RecordingNotifier, RecordingPublisher, ScriptedSource, WrappedBackend, grey

OK_IMG = grey(120, 200)
NG_IMG = grey(120, 200, blob=True)


def settings(camera=None, **pipeline):
    pipeline.setdefault("warmup_runs", 0)
    return Settings(
        pipeline=pipeline,
        camera={"read_timeout_s": 0.2, "reconnect_initial_s": 0.02, "reconnect_max_s": 0.1, **(camera or {})},
        publisher={"heartbeat_s": 0.05},
    )


def backend(model_dir, **kw) -> WrappedBackend:
    return WrappedBackend(OnnxRuntimeBackend(model_dir, load_manifest(model_dir)), **kw)


def run_pipeline(source, be, cfg, publisher=None, notifier=None, timeout=20.0):
    publisher = publisher or RecordingPublisher()
    p = Pipeline(source, be, publisher, cfg, notifier=notifier)
    p.start()
    assert p.wait(timeout), "pipeline did not finish"
    return p, publisher


def assert_invariant(p):
    c = p.stats.snapshot()["counters"]
    assert c["frames_in"] == c["verdicts_out"] + c["publish_errors"] + c["dropped_queue"]
    assert c["verdicts_out"] == c["ok"] + c["ng"] + c["unknown"]


def test_lossless_every_frame_in_order(tiny_model_dir):
    n = 40
    src = ScriptedSource([OK_IMG, NG_IMG], count=n)
    be = backend(tiny_model_dir)
    notifier = RecordingNotifier()
    p, pub = run_pipeline(src, be, settings(mode="lossless", queue_size=2), notifier=notifier)
    assert [v.seq for v in pub.verdicts] == list(range(n))
    assert [v.label for v in pub.verdicts] == ["ok", "ng"] * (n // 2)
    c = p.summary()["counters"]
    assert (c["frames_in"], c["verdicts_out"], c["dropped_queue"], c["unknown"]) == (n, n, 0, 0)
    assert_invariant(p)
    v = pub.verdicts[1]
    assert v.regions and v.model_id == "tiny-test-model" and v.camera_id == "cam-test"
    assert {"capture_wait", "preprocess", "infer", "decide", "total"} <= set(v.latency_ms)
    # every verdict was handed over by one thread, in order; everything was closed
    assert pub.threads == {"edge-inspect-decide"} and pub.closed and be.closed and src.closes >= 1
    assert notifier.events.count("ready") == 1
    assert p.summary()["state"] == "stopped" and p.summary()["in_flight"] == 0


def test_free_run_slow_backend_drops_and_counts(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=60, interval_s=0.003)
    be = backend(tiny_model_dir, delay_s=0.03)
    p, pub = run_pipeline(src, be, settings(mode="free-run"))
    c = p.stats.snapshot()["counters"]
    assert c["frames_in"] == 60 and c["dropped_queue"] > 20
    assert c["verdicts_out"] == len(pub.verdicts) < 40
    assert_invariant(p)
    seqs = [v.seq for v in pub.verdicts]
    assert seqs == sorted(seqs) and seqs[-1] == 59  # newest frames win; the last one is judged


def test_camera_sequence_gaps_counted(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=6, seqs=[0, 1, 2, 5, 6, 10])
    p, pub = run_pipeline(src, backend(tiny_model_dir), settings(mode="lossless"))
    c = p.stats.snapshot()["counters"]
    assert c["dropped_gap"] == 2 + 3 and c["frames_in"] == 6 and len(pub.verdicts) == 6


def test_backend_error_gives_one_unknown_then_normal(tiny_model_dir):
    src = ScriptedSource(NG_IMG, count=6)
    p, pub = run_pipeline(src, backend(tiny_model_dir, fail_calls={2}), settings(mode="lossless"))
    labels = [v.label for v in pub.verdicts]
    assert labels == ["ng", "ng", "unknown", "ng", "ng", "ng"]
    bad = pub.verdicts[2]
    assert "injected failure on call 2" in bad.error and bad.score is None and bad.seq == 2
    c = p.stats.snapshot()["counters"]
    assert c["errors"] == 1 and c["unknown"] == 1
    assert_invariant(p)


def test_bad_image_gives_unknown(tiny_model_dir):
    import numpy as np

    src = ScriptedSource([OK_IMG, np.zeros((4, 4, 3), np.int64), OK_IMG], count=3)
    p, pub = run_pipeline(src, backend(tiny_model_dir), settings(mode="lossless"))
    assert [v.label for v in pub.verdicts] == ["ok", "unknown", "ok"]
    assert "preprocess failed" in pub.verdicts[1].error


def test_inference_timeout_gives_unknown(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=4)
    be = backend(tiny_model_dir, hang_calls={1: 0.8})
    p, pub = run_pipeline(src, be, settings(mode="lossless", infer_timeout_s=0.2))
    assert [v.seq for v in pub.verdicts] == [0, 1, 2, 3]
    assert [v.label for v in pub.verdicts] == ["ok", "unknown", "ok", "ok"]
    assert "timed out after 0.2 s" in pub.verdicts[1].error
    c = p.stats.snapshot()["counters"]
    assert c["timeouts"] == 1 and c["late_results"] == 1 and c["verdicts_out"] == 4


def test_camera_error_reconnects_without_stale_frames(tiny_model_dir):
    """Lost after 3 frames, the first reopen fails, the second works: the source wrapper reconnects, the
    pipeline reads on; the lost/back events reach the heartbeat at once."""
    # 20 ms between frames: the camera stays "ok" for ~100 ms after it is back, long enough for the heartbeat
    # thread to wake and read it (with no pause the source ends and closes first, and "ok" is never seen)
    src = ScriptedSource(OK_IMG, count=8, read_errors={3: CameraError("link down")}, reopen_failures=1,
                         interval_s=0.02)
    pub = RecordingPublisher(heartbeat_s=5.0)  # no periodic beats: the camera events themselves must send one
    p, pub = run_pipeline(src, backend(tiny_model_dir), settings(mode="lossless"), publisher=pub)
    # no frame invented while the camera was down: one verdict per delivered frame
    assert [v.seq for v in pub.verdicts] == src.delivered == list(range(8))
    c = p.stats.snapshot()["counters"]
    assert c["camera_errors"] == 2 and c["reconnects"] == 1 and src.opens == 3
    assert c["dropped_gap"] == 0  # a non-live source loses nothing while it is away
    states = [h["camera"]["state"] for h in pub.heartbeats]
    assert "reconnecting" in states and states[-1] == "closed"
    assert "ok" in states[states.index("reconnecting"):]  # ... and back
    assert any("link down" in (h["camera"]["error"] or "") for h in pub.heartbeats)
    assert pub.heartbeats[-1]["state"] == "stopped"


def test_stop_midstream_publishes_taken_frames(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=None, interval_s=0.002)
    be = backend(tiny_model_dir, delay_s=0.02)
    pub = RecordingPublisher()
    notifier = RecordingNotifier()
    p = Pipeline(src, be, pub, settings(mode="lossless", queue_size=4), notifier=notifier)
    p.start()
    deadline = time.monotonic() + 10
    while len(pub.verdicts) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.stop(timeout=10) is True
    taken = len(src.delivered)
    assert taken >= 10  # frames were queued behind the slow backend when stop came
    assert [v.seq for v in pub.verdicts] == list(range(taken))
    assert p.stats.get("verdicts_out") == p.stats.get("frames_in") == taken
    assert pub.closed and be.closed and not src.is_open and "stopping" in notifier.events


def test_max_frames(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=None)
    p, pub = run_pipeline(src, backend(tiny_model_dir), settings(mode="lossless", max_frames=7))
    assert len(pub.verdicts) == 7 and src.closes >= 1


def _second_model(tmp_path, tiny_model_dir, model_id="tiny-second", threshold=100.0):
    other = make_tiny_model(tmp_path / "second", threshold=threshold)
    m = load_manifest(other)
    m.model_id = model_id
    save_manifest(m, other)
    return other


def _factory(model_dir, manifest):
    return OnnxRuntimeBackend(model_dir, manifest)


def test_reload_swaps_and_broken_folder_keeps_old(tiny_model_dir, tmp_path):
    src = ScriptedSource(NG_IMG, count=None, interval_s=0.005)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(mode="free-run"), backend_factory=_factory)
    p.start()
    try:
        while len(pub.verdicts) < 3:
            time.sleep(0.01)
        broken = tmp_path / "broken"
        shutil.copytree(tiny_model_dir, broken)
        (broken / "features.onnx").write_bytes(b"garbage")
        with pytest.raises(ModelError):
            p.reload(broken)
        assert p.status()["model_id"] == "tiny-test-model"
        n_before = len(pub.verdicts)
        while len(pub.verdicts) < n_before + 3:  # still judging with the old model
            time.sleep(0.01)
        assert pub.verdicts[-1].label == "ng"

        info = p.reload(_second_model(tmp_path, tiny_model_dir))
        assert info["model_id"] == "tiny-second" and info["generation"] == 1
        assert p.status()["model_id"] == "tiny-second" and p.status()["threshold"]["image"] == 100.0
        n_after = len(pub.verdicts)
        while len(pub.verdicts) < n_after + 3:
            time.sleep(0.01)
    finally:
        assert p.stop(timeout=10)
    new = [v for v in pub.verdicts if v.model_id == "tiny-second"]
    assert len(new) >= 3 and all(v.label == "ok" and v.threshold == 100.0 for v in new)
    # the swap happened between frames: once the new model appears, the old one never does again
    ids = [v.model_id for v in pub.verdicts]
    first_new = ids.index("tiny-second")
    assert set(ids[first_new:]) == {"tiny-second"}
    assert p.stats.get("reloads") == 1 and p.stats.get("unknown") == 0


def test_set_threshold_and_status(tiny_model_dir):
    src = ScriptedSource(NG_IMG, count=None, interval_s=0.005)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(mode="free-run"))
    p.start()
    try:
        while len(pub.verdicts) < 3:
            time.sleep(0.01)
        assert pub.verdicts[-1].label == "ng"
        assert p.set_threshold(image=1000.0) == {"image": 1000.0, "pixel": 0.5, "source": "runtime"}
        n = len(pub.verdicts)
        while len(pub.verdicts) < n + 3:
            time.sleep(0.01)
        assert pub.verdicts[-1].label == "ok" and pub.verdicts[-1].threshold == 1000.0
        s = p.status()
    finally:
        p.stop(timeout=10)
    assert s["state"] == "running" and s["mode"] == "free-run" and s["backend"] == "wrapped"
    assert s["model_id"] == "tiny-test-model" and s["threshold"] == {"image": 1000.0, "pixel": 0.5, "source": "runtime"}
    assert s["fps"] > 0 and s["uptime_s"] > 0
    assert (s["camera"]["id"], s["camera"]["state"], s["camera"]["error"]) == ("cam-test", "ok", None)
    assert s["camera"]["source"]["state"] == "connected" and s["camera"]["source"]["frames"] >= 6
    for stage in ("preprocess", "infer", "decide", "total"):
        assert set(s["latency_ms"][stage]) >= {"median", "p99"}
    assert s["counters"]["verdicts_out"] >= 6 and "dropped_queue" in s["counters"]
    assert pub.heartbeats and pub.heartbeats[0]["model_id"] == "tiny-test-model"


def test_trigger_forwards_and_ready_after_first_frame(tiny_model_dir):
    gate = threading.Event()

    class GatedSource(ScriptedSource):
        def read(self, timeout=1.0):
            if not gate.wait(timeout):
                return None
            return super().read(timeout)

    src = GatedSource(OK_IMG, count=2)
    notifier = RecordingNotifier()
    p = Pipeline(src, backend(tiny_model_dir), RecordingPublisher(), settings(mode="lossless"), notifier=notifier)
    p.start()
    time.sleep(0.5)
    assert "ready" not in notifier.events and p.status()["state"] == "starting"
    assert "watchdog" in notifier.events  # the inference loop pings while idle
    p.trigger("PART-42")
    assert src.triggers == ["PART-42"]
    gate.set()
    assert p.wait(10)
    assert notifier.events.count("ready") == 1


def test_stop_before_start_closes_collaborators(tiny_model_dir):
    pub = RecordingPublisher()
    be = backend(tiny_model_dir)
    p = Pipeline(ScriptedSource(OK_IMG), be, pub, settings())
    assert p.stop() is True and pub.closed and be.closed


def test_stop_with_hung_backend_answers_every_taken_frame(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=None, interval_s=0.005)
    be = backend(tiny_model_dir, hang_calls={2: 3.0})
    pub = RecordingPublisher()
    p = Pipeline(src, be, pub, settings(mode="lossless", infer_timeout_s=30.0, drain_timeout_s=0.3))
    p.start()
    while be.calls < 3:  # the third inference is now hanging
        time.sleep(0.01)
    time.sleep(0.1)
    t0 = time.monotonic()
    assert p.stop() is True
    assert time.monotonic() - t0 < 3.0  # did not wait for the hung call
    taken = len(src.delivered)
    assert [v.seq for v in pub.verdicts] == list(range(taken)) and taken > 3
    assert [v.label for v in pub.verdicts[:2]] == ["ok", "ok"]
    assert all(v.label == "unknown" and "drain timeout" in v.error for v in pub.verdicts[2:])
    assert p.summary()["in_flight"] == 0 and pub.closed


def test_camera_dependency_error_is_fatal_not_retried(tiny_model_dir):
    from edge_inspect.errors import DependencyError

    class NeedsAravis(ScriptedSource):
        def open(self):
            self.opens += 1
            raise DependencyError("gige:// needs the Python package 'gi'")

    src = NeedsAravis(OK_IMG)
    pub = RecordingPublisher()
    be = backend(tiny_model_dir)
    p = Pipeline(src, be, pub, settings(camera={"wait_at_start_s": 1.0}))
    with pytest.raises(DependencyError):
        p.start()  # the camera is opened in start(), after the model: one line for the user, no thread
    assert isinstance(p.fatal_error, DependencyError) and src.opens == 1
    assert p.summary()["state"] == "failed" and pub.verdicts == [] and pub.closed and be.closed and p.wait(0)


@pytest.mark.parametrize("interval_s, expected_gap_s", [(None, 0.25), (30.0, 0.25), (0.2, 0.1)])
def test_watchdog_pings_at_most_half_the_watchdog_interval_apart(tiny_model_dir, interval_s, expected_gap_s):
    """An idle line (the camera sends nothing) still pings; the pace follows WatchdogSec= when it is short."""

    class TimedNotifier(RecordingNotifier):
        def __init__(self):
            super().__init__()
            self.pings: list[float] = []

        def watchdog_interval_s(self):
            return interval_s

        def watchdog(self):
            self.pings.append(time.monotonic())

    class SilentSource(ScriptedSource):
        def read(self, timeout=1.0):
            time.sleep(timeout)
            return None

    notifier = TimedNotifier()
    p = Pipeline(SilentSource(OK_IMG, count=None), backend(tiny_model_dir), RecordingPublisher(),
                 settings(mode="lossless"), notifier=notifier)
    p.start()
    try:
        time.sleep(1.2)
    finally:
        p.stop(wait=True)
    gaps = [b - a for a, b in zip(notifier.pings, notifier.pings[1:], strict=False)]
    assert len(gaps) >= 3, notifier.pings
    # never further apart than the pace plus scheduling slack, and not much closer either
    assert max(gaps) <= expected_gap_s + 0.08, gaps
    assert min(gaps) >= expected_gap_s - 0.01, gaps
    if interval_s is not None:
        assert max(gaps) <= interval_s / 2 + 0.08

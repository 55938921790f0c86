"""One owner per responsibility (issue 17): the publisher owns the PUB socket, its queue and the heartbeat clock;
the source wrapper owns reconnecting and sequence gaps; the collaborators' interfaces are declared. And what a
new user hit: a camera never seen is not retried for ever, recordings are judged losslessly by default, drops
are warned about while running, every file ends as a verdict or a counted gap, the final heartbeat carries the
final counts."""

from __future__ import annotations

import logging
import threading
import time

import cv2
import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.camera.files import DirSource
from edge_inspect.camera.synthetic import SyntheticSource
from edge_inspect.errors import CameraError
from edge_inspect.health.sdnotify import SystemdNotifier
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.bench import NullPublisher
from edge_inspect.pipeline.interfaces import Notifier, NullNotifier, VerdictSink
from edge_inspect.pipeline.runner import Pipeline
from edge_inspect.protocol.publisher import VerdictPublisher
from edge_inspect.settings import Settings
from tests.pipeline.fakes import RecordingNotifier, RecordingPublisher, ScriptedSource, Wire, WrappedBackend, grey

OK_IMG = grey(120, 200)


def settings(camera=None, publisher=None, **pipeline):
    pipeline.setdefault("warmup_runs", 0)
    return Settings(
        pipeline=pipeline,
        camera={"read_timeout_s": 0.2, "reconnect_initial_s": 0.02, "reconnect_max_s": 0.1, **(camera or {})},
        publisher={"bind": "tcp://127.0.0.1:*", "heartbeat_s": 0.05, "linger_ms": 200, **(publisher or {})},
        security={"curve": "off"},
    )


def backend(model_dir, **kw) -> WrappedBackend:
    return WrappedBackend(OnnxRuntimeBackend(model_dir, load_manifest(model_dir)), **kw)


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ---- declared interfaces --------------------------------------------------------------------------------


def test_collaborators_satisfy_the_declared_interfaces():
    cfg = settings()
    real = VerdictPublisher(cfg.publisher, cfg.security)
    try:
        for sink in (real, RecordingPublisher(), NullPublisher()):
            assert isinstance(sink, VerdictSink), type(sink).__name__
    finally:
        real.close()
    for notifier in (SystemdNotifier(environ={}), RecordingNotifier(), NullNotifier()):
        assert isinstance(notifier, Notifier), type(notifier).__name__


# ---- the publisher owns the heartbeat clock ---------------------------------------------------------------


class SpySink:
    """A VerdictSink and nothing more: no heartbeat() to call, so the pipeline cannot time heartbeats."""

    def __init__(self):
        self.verdicts, self.calls, self.provider, self.closed = [], [], None, False

    def publish(self, verdict):
        self.calls.append(("publish", threading.current_thread().name))
        self.verdicts.append(verdict)

    def attach_status(self, provider):
        self.calls.append(("attach_status", threading.current_thread().name))
        self.provider = provider

    def beat_soon(self):
        self.calls.append(("beat_soon", threading.current_thread().name))

    def close(self):
        self.closed = True


def test_the_pipeline_hands_over_verdicts_and_a_status_provider_and_never_times_heartbeats(tiny_model_dir):
    sink = SpySink()
    p = Pipeline(ScriptedSource(OK_IMG, count=12, interval_s=0.02), backend(tiny_model_dir), sink,
                 settings(mode="lossless"))
    p.start()
    assert p.wait(20)
    kinds = {k for k, _ in sink.calls}
    assert kinds == {"attach_status", "publish", "beat_soon"}  # beat_soon: events (first frame, camera state)
    assert len(sink.verdicts) == 12 and {t for k, t in sink.calls if k == "publish"} == {"edge-inspect-decide"}
    assert sink.calls.count(("attach_status", threading.current_thread().name)) == 1
    status = sink.provider()  # the provider gives the pipeline's status, made sendable
    assert status["state"] == "stopped" and status["counters"]["verdicts_out"] == 12 and sink.closed


def test_final_stopped_heartbeat_on_the_wire_carries_the_final_counts(tiny_model_dir):
    """It used to carry the counters of the last periodic beat (stale): now the publisher asks the pipeline
    once more when it is closed, after the last verdict was counted."""
    n = 25
    cfg = settings(mode="lossless", publisher={"heartbeat_s": 5.0})  # no periodic beat near the end
    pub = VerdictPublisher(cfg.publisher, cfg.security, camera_id="cam-test")
    wire = Wire(pub.endpoint)
    pub.beat_soon()
    wait_for(lambda: wire.heartbeats)  # the subscription is live
    p = Pipeline(ScriptedSource(OK_IMG, count=n, interval_s=0.005), backend(tiny_model_dir), pub, cfg)
    p.start()
    assert p.wait(20)
    wire.close(0.3)
    last = wire.heartbeats[-1]
    assert last.status["state"] == "stopped" and last.last_msg_seq == n - 1
    c = last.status["counters"]
    assert (c["frames_in"], c["verdicts_out"], c["ok"]) == (n, n, n)
    assert last.publisher["published"] == n and len(wire.verdicts) == n


def test_publisher_heartbeats_use_the_provider_and_survive_its_failures():
    cfg = settings(publisher={"heartbeat_s": 0.05})
    calls = {"n": 0}

    def provider():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("status bug")
        if calls["n"] == 4:
            return {"state": "running", "fps": float("nan")}  # not sendable
        return {"state": "running", "fps": 10.0, "n": calls["n"]}

    with VerdictPublisher(cfg.publisher, cfg.security) as pub:
        wire = Wire(pub.endpoint)
        pub.attach_status(provider)
        wait_for(lambda: len(wire.heartbeats) >= 8)
        wire.close(0)
    ns = [hb.status["n"] for hb in wire.heartbeats if "n" in hb.status]
    assert ns == sorted(ns) and calls["n"] >= 8  # beats went on; the refused ones repeated the last good status
    assert all(hb.status["fps"] == 10.0 for hb in wire.heartbeats if hb.status.get("state") == "running")


def test_beat_soon_sends_a_heartbeat_now_not_at_the_next_tick():
    cfg = settings(publisher={"heartbeat_s": 30.0})
    with VerdictPublisher(cfg.publisher, cfg.security) as pub:
        wire = Wire(pub.endpoint)
        time.sleep(0.3)  # subscribed; the first tick (at start) has passed
        n = len(wire.heartbeats)
        t = time.monotonic()
        pub.attach_status(lambda: {"state": "running", "camera": {"state": "reconnecting"}})
        pub.beat_soon()
        wait_for(lambda: len(wire.heartbeats) > n, timeout=2)
        assert time.monotonic() - t < 0.5
        wire.close(0)
    assert wire.heartbeats[-1].status["camera"]["state"] == "reconnecting"
    assert pub.counters()["heartbeats"] >= 2


# ---- the camera: one owner, never-seen cameras fail fast -----------------------------------------------------


def test_a_camera_never_seen_fails_the_start_at_once_and_is_not_retried(tiny_model_dir):
    src = ScriptedSource(OK_IMG, open_failures=1000)
    pub = RecordingPublisher()
    be = backend(tiny_model_dir)
    p = Pipeline(src, be, pub, settings())
    t = time.monotonic()
    with pytest.raises(CameraError, match="fake camera not reachable"):
        p.start()
    assert time.monotonic() - t < 2 and src.opens == 1 and p.fatal_error is not None
    assert pub.verdicts == [] and pub.closed and be.closed and p.summary()["state"] == "failed"


def test_a_camera_that_comes_up_within_wait_at_start_is_used(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=5, open_failures=2)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(camera={"wait_at_start_s": 5.0}, mode="lossless"))
    p.start()
    assert p.wait(20) and src.opens == 3 and len(pub.verdicts) == 5
    assert p.stats.get("camera_errors") == 2 and p.stats.get("reconnects") == 0  # failed first opens, no reconnect


def test_sequence_gaps_are_the_source_wrappers_and_shown_once(tiny_model_dir):
    src = ScriptedSource(OK_IMG, count=6, seqs=[1, 2, 5, 6, 7, 10])  # also: seq 0 and 11.. never came
    p = Pipeline(src, backend(tiny_model_dir), RecordingPublisher(), settings(mode="lossless"))
    p.start()
    assert p.wait(20)
    c = p.summary()["counters"]
    assert c["dropped_gap"] == p.source.counters.gaps == p.summary()["camera"]["gaps"] == 1 + 2 + 2
    assert c["frames_in"] == 6


# ---- recordings: lossless by default, every file a verdict or a counted gap ---------------------------------------


def _folder(tmp_path, n=15, bad=(0, 4, 7, 9, 14)):
    for i in range(n):
        path = tmp_path / f"{i:02d}.png"
        if i in bad:
            path.write_bytes(b"garbage, not a png")
        else:
            cv2.imwrite(str(path), grey(120, 200, blob=bool(i % 2)))
    return tmp_path


def test_a_dir_source_is_judged_losslessly_by_default_and_every_file_is_accounted_for(tiny_model_dir, tmp_path):
    """It used to run free-run (31 of 36 images dropped behind a slower model) and to lose a bad last file."""
    folder = _folder(tmp_path)
    cfg = settings()  # mode not chosen: "auto"
    assert cfg.pipeline.mode == "auto"
    pub = RecordingPublisher()
    p = Pipeline(DirSource(str(folder)), backend(tiny_model_dir, delay_s=0.03), pub, cfg)
    assert p.mode == "lossless"
    p.start()
    assert p.wait(30)
    c = p.summary()["counters"]
    assert (c["frames_in"], c["verdicts_out"], c["dropped_queue"], c["dropped_gap"]) == (10, 10, 0, 5)
    assert c["verdicts_out"] + c["dropped_gap"] == 15  # every file: a verdict or a counted gap
    assert [v.seq for v in pub.verdicts] == [i for i in range(15) if i not in (0, 4, 7, 9, 14)]
    final = pub.heartbeats[-1]
    assert final["state"] == "stopped" and final["counters"]["dropped_gap"] == 5 and final["drops"] == 5


def test_auto_mode_runs_cameras_free(tiny_model_dir):
    p = Pipeline(SyntheticSource(fps=30, size=64), backend(tiny_model_dir), RecordingPublisher(), settings())
    assert p.mode == "free-run"
    p.stop()


def test_heavy_drops_are_a_warning_while_running_not_only_in_the_summary(tiny_model_dir, caplog):
    notifier = RecordingNotifier()
    src = ScriptedSource(OK_IMG, count=None, interval_s=0.002)
    p = Pipeline(src, backend(tiny_model_dir, delay_s=0.03), RecordingPublisher(), settings(mode="free-run"),
                 notifier=notifier)
    with caplog.at_level(logging.WARNING, logger="edge_inspect.health.stats"):
        p.start()
        try:
            wait_for(lambda: any("were dropped" in r.getMessage() for r in caplog.records), timeout=10)
            assert p.status()["state"] == "running"  # said while running
        finally:
            p.stop(timeout=10)
    line = next(r.getMessage() for r in caplog.records if "were dropped" in r.getMessage())
    assert "warning above 10 %" in line and "--mode lossless" in line
    assert any(e.startswith("status:") and "WARNING" in e for e in notifier.events)
    assert p.summary()["drop_warnings"] >= 1


def test_no_drop_warning_for_a_line_that_keeps_up(tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_inspect.health.stats"):
        p = Pipeline(ScriptedSource(OK_IMG, count=60, interval_s=0.01), backend(tiny_model_dir),
                     RecordingPublisher(), settings(mode="free-run"))
        p.start()
        assert p.wait(20)
    assert p.stats.get("dropped_queue") == 0 and not any("dropped" in r.getMessage() for r in caplog.records)


# ---- reload: one at a time, memory given back -------------------------------------------------------------------


def test_a_second_reload_while_one_loads_is_refused_and_the_old_backend_is_released(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    import gc
    import weakref

    from edge_inspect.errors import ModelError
    from edge_inspect.pipeline import runner
    from tests.fixtures.tiny_model import make_tiny_model

    second = make_tiny_model(tmp_path / "second", threshold=100.0)
    gate = threading.Event()

    def slow_factory(model_dir, manifest):
        gate.wait(10)
        return OnnxRuntimeBackend(model_dir, manifest)

    trims = []
    monkeypatch.setattr(runner, "release_free_memory", lambda: trims.append(1) or True)
    first_backend = backend(tiny_model_dir)
    inner = weakref.ref(first_backend.inner)
    pub = RecordingPublisher()
    p = Pipeline(ScriptedSource(OK_IMG, count=None, interval_s=0.01), first_backend, pub, settings(),
                 backend_factory=slow_factory)
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 2)
        replies = {}
        t = threading.Thread(target=lambda: replies.setdefault("first", p.reload(second)))
        t.start()
        time.sleep(0.2)  # the first reload is loading (held at the gate)
        with pytest.raises(ModelError, match="another reload is in progress"):
            p.reload(second)
        assert p.status()["state"] == "running"  # status is answered meanwhile
        gate.set()
        t.join(10)
        assert replies["first"]["generation"] == 1 and replies["first"]["in_force"]
    finally:
        gate.set()
        p.stop(timeout=10)
    del first_backend
    gc.collect()
    assert first_backend_closed(inner)  # nothing keeps the swapped-out model alive ...
    assert trims == [1]  # ... and its memory was given back (the refused call loaded nothing)


def first_backend_closed(ref) -> bool:
    """The swapped-out backend is closed and nothing keeps it alive (its sessions can be freed)."""
    be = ref()
    return be is None or be._sessions == []

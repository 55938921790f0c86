"""Nothing wrong is published and nothing is lost silently: publish failures, counters that follow what was
published, one threshold rule for set_threshold and reload, refused reloads that change nothing, and the
drift watch in status() and the heartbeat."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.errors import ConfigError, ManifestError, ModelError, ProtocolError
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.runner import Pipeline
from edge_inspect.protocol.messages import check_status
from edge_inspect.settings import Settings
from tests.fixtures.tiny_model import make_tiny_model
from tests.pipeline.fakes import RecordingPublisher, ScriptedSource, WrappedBackend, grey, model_variant

OK_IMG = grey(120, 200)
NG_IMG = grey(120, 200, blob=True)


def settings(drift=None, model=None, **pipeline):
    pipeline.setdefault("warmup_runs", 0)
    return Settings(
        pipeline=pipeline,
        camera={"read_timeout_s": 0.2, "reconnect_initial_s": 0.02, "reconnect_max_s": 0.1},
        publisher={"heartbeat_s": 0.05},
        drift=drift or {},
        model=model or {},
    )


def backend(model_dir) -> WrappedBackend:
    return WrappedBackend(OnnxRuntimeBackend(model_dir, load_manifest(model_dir)))


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def bounded_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its real lower bounds: its score and map are squared distances, never below 0."""
    return model_variant(tiny_model_dir, tmp_path_factory.mktemp("bounded") / "m", score_lower_bound=0.0,
                         map_lower_bound=0.0)


class CountingFactory:
    """backend_factory for reload that records which folders got a backend."""

    def __init__(self):
        self.made = []

    def __call__(self, model_dir, manifest):
        self.made.append(str(model_dir))
        return OnnxRuntimeBackend(model_dir, manifest)


# ---- publishing ------------------------------------------------------------------------------------


class RaisingPublisher(RecordingPublisher):
    """publish() always raises, as it did for a manifest with an infinite threshold; heartbeats work."""

    def publish(self, verdict):
        raise ProtocolError("verdict.threshold: inf is not finite")


def test_a_verdict_that_cannot_be_published_is_an_error_never_a_judged_part(tiny_model_dir, caplog):
    n = 12
    src = ScriptedSource([OK_IMG, NG_IMG], count=n, interval_s=0.03)
    pub = RaisingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(mode="lossless"))
    p.start()
    assert p.wait(20)
    c = p.summary()["counters"]
    assert (c["frames_in"], c["publish_errors"]) == (n, n)
    assert (c["verdicts_out"], c["ok"], c["ng"], c["unknown"]) == (0, 0, 0, 0)  # nothing reached the PLC
    assert c["frames_in"] == c["verdicts_out"] + c["publish_errors"] + c["dropped_queue"]
    assert p.summary()["in_flight"] == 0 and p.stats.fps() == 0.0
    beats = [h for h in pub.heartbeats if h["publish_errors"]]
    assert beats and all(h["errors"] >= h["publish_errors"] for h in beats)
    assert p.status()["publish_errors"] == n and p.status()["errors"] == n
    assert any("NOT published" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


class DowngradingPublisher(RecordingPublisher):
    """Sends every verdict as "unknown", as the wire format does for one it cannot encode."""

    def publish(self, verdict):
        super().publish(verdict)
        return SimpleNamespace(result_state="unknown")


def test_counters_follow_the_label_that_was_published(tiny_model_dir):
    src = ScriptedSource(NG_IMG, count=6)
    p = Pipeline(src, backend(tiny_model_dir), DowngradingPublisher(), settings(mode="lossless"))
    p.start()
    assert p.wait(20)
    c = p.summary()["counters"]
    assert (c["verdicts_out"], c["ng"], c["unknown"]) == (6, 0, 6)


def test_heartbeats_go_out_even_when_status_holds_a_non_finite_number(tiny_model_dir, caplog):
    """A NaN (here from the camera's own figures) used to make every heartbeat fail: stuck at 'starting'."""

    class OddCamera(ScriptedSource):
        def counters(self):  # the camera's own figures, carried in status()["camera"]["source"]
            return {"gain_db": float("nan"), "frames_read": self.reads}

    pub = RecordingPublisher()  # refuses NaN like the real publisher
    p = Pipeline(OddCamera(OK_IMG, count=None, interval_s=0.01), backend(tiny_model_dir), pub, settings())
    p.start()
    try:
        wait_for(lambda: any(h["state"] == "running" for h in pub.heartbeats))
    finally:
        p.stop(timeout=10)
    beat = next(h for h in pub.heartbeats if h["state"] == "running")
    assert beat["camera"]["source"]["gain_db"] is None and beat["camera"]["source"]["frames_read"] > 0
    assert any("non-finite" in r.getMessage() for r in caplog.records)


# ---- set_threshold: one rule, checked against the model's lower bound --------------------------------


@pytest.mark.parametrize("kwargs, fragment", [
    ({"image": float("nan")}, "set_threshold image must be a finite number, got nan"),
    ({"image": float("inf")}, "set_threshold image must be a finite number, got inf"),
    ({"image": -0.5}, "set_threshold image -0.5 is below 0, the least value the model outputs"),
    ({"pixel": -1.0}, "set_threshold pixel -1 is below 0, the least value the model outputs"),
    ({"image": 0.7, "pixel": float("nan")}, "set_threshold pixel must be a finite number"),  # all or nothing
])
def test_set_threshold_refusal_changes_nothing(bounded_dir, kwargs, fragment):
    src = ScriptedSource(NG_IMG, count=None, interval_s=0.005)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(bounded_dir), pub, settings())
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 3)
        with pytest.raises(ConfigError) as err:
            p.set_threshold(**kwargs)
        assert fragment in str(err.value) and "\n" not in str(err.value)
        n = len(pub.verdicts)
        wait_for(lambda: len(pub.verdicts) >= n + 3)
        status = p.status()
    finally:
        p.stop(timeout=10)
    assert status["threshold"] == {"image": 0.5, "pixel": 0.5, "source": "manifest"}
    assert all(v.threshold == 0.5 and v.label == "ng" for v in pub.verdicts)


def test_negative_threshold_is_fine_for_an_unbounded_score(tiny_model_dir):
    """Fused z-scores can be negative: without a lower bound in the manifest, a negative threshold is a threshold."""
    src = ScriptedSource(OK_IMG, count=None, interval_s=0.005)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings())
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 2)
        assert pub.verdicts[-1].label == "ok"
        assert p.set_threshold(image=-1.0) == {"image": -1.0, "pixel": 0.5, "source": "runtime"}
        n = len(pub.verdicts)
        wait_for(lambda: len(pub.verdicts) >= n + 3)
    finally:
        p.stop(timeout=10)
    assert pub.verdicts[-1].label == "ng" and pub.verdicts[-1].threshold == -1.0


# ---- reload: refused means nothing changed ----------------------------------------------------------------


BAD_MANIFESTS = {
    "image_threshold Infinity": ({"image_threshold": float("inf")}, "image_threshold must be a finite number"),
    "image_threshold NaN": ({"image_threshold": float("nan")}, "image_threshold must be a finite number"),
    "pixel_threshold NaN": ({"pixel_threshold": float("nan")}, "pixel_threshold must be a finite number"),
    "norm_max NaN": ({"norm_max": float("nan")}, "norm_max must be a finite number"),
    "threshold below the score's bound": ({"image_threshold": -0.1, "score_lower_bound": 0.0},
                                          "the least value the model outputs"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_reload_of_a_bad_manifest_is_refused_and_the_old_model_keeps_judging(tiny_model_dir, tmp_path, case):
    changes, fragment = BAD_MANIFESTS[case]
    bad = model_variant(tiny_model_dir, tmp_path / "bad", **changes)
    factory = CountingFactory()
    src = ScriptedSource(NG_IMG, count=None, interval_s=0.005)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(), backend_factory=factory)
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 3)
        before = p.status()
        with pytest.raises(ManifestError) as err:
            p.reload(bad)
        assert fragment in str(err.value) and "manifest.json" in str(err.value) and "\n" not in str(err.value)
        n = len(pub.verdicts)
        wait_for(lambda: len(pub.verdicts) >= n + 5)
        after = p.status()
    finally:
        p.stop(timeout=10)
    assert factory.made == []  # no backend was even made for the refused folder
    assert after["generation"] == before["generation"] == 0 and after["model_dir"] == str(tiny_model_dir)
    assert after["threshold"] == before["threshold"] and p.stats.get("reloads") == 0
    assert all(v.model_id == "tiny-test-model" and v.threshold == 0.5 and v.label == "ng" for v in pub.verdicts)
    assert p.stats.get("publish_errors") == 0 and p.stats.get("unknown") == 0


def test_reload_refused_when_a_configured_override_does_not_fit_the_new_model(tiny_model_dir, bounded_dir):
    """The override -1 is a fine threshold for the running (unbounded) model, not for the bounded one."""
    factory = CountingFactory()
    pub = RecordingPublisher()
    src = ScriptedSource(OK_IMG, count=None, interval_s=0.005)
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(model={"image_threshold": -1.0}), backend_factory=factory)
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 3)
        with pytest.raises(ConfigError,
                           match=r"^model\.image_threshold -1 is below 0, the least value the model outputs"):
            p.reload(bounded_dir)
        n = len(pub.verdicts)
        wait_for(lambda: len(pub.verdicts) >= n + 3)
        status = p.status()
    finally:
        p.stop(timeout=10)
    assert factory.made == [] and status["generation"] == 0 and status["threshold"]["image"] == -1.0
    assert {v.label for v in pub.verdicts} == {"ng"} and {v.threshold for v in pub.verdicts} == {-1.0}


def test_reload_reply_says_the_new_model_is_in_force_and_is_json(tiny_model_dir, tmp_path):
    second = make_tiny_model(tmp_path / "second", threshold=100.0)
    pub = RecordingPublisher()
    p = Pipeline(ScriptedSource(NG_IMG, count=None, interval_s=0.005), backend(tiny_model_dir), pub, settings(),
                 backend_factory=CountingFactory())
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 2)
        reply = p.reload(second)
        json.dumps(reply, allow_nan=False)
        assert reply["in_force"] is True and reply["generation"] == 1 and reply["threshold"]["image"] == 100.0
        n = len(pub.verdicts)
        wait_for(lambda: len(pub.verdicts) >= n + 3)
    finally:
        p.stop(timeout=10)
    assert pub.verdicts[-1].threshold == 100.0 and p.stats.get("reloads") == 1


# ---- drift watch in status() and the heartbeat ----------------------------------------------------------


def test_status_and_heartbeat_carry_the_drift_block(tiny_model_dir):
    src = ScriptedSource([OK_IMG] * 3 + [NG_IMG], count=40, interval_s=0.01)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub,
                 settings(mode="lossless", drift={"min_samples": 10, "check_every": 5}))
    p.start()
    assert p.wait(20)
    d = p.status()["drift"]
    assert d["state"] == "ok" and d["n"] == 30 and d["ng_share"] == pytest.approx(0.25)
    assert d["threshold"] == 0.5 and d["estimated_frr"] is not None and d["estimated_frr"] < d["alert_frr"]
    # the tiny model's OK parts score ~0, below its calibration (good mean 0.1): a negative shift, no alarm
    assert d["median"] < d["calibration_median"] and d["shift_sigma"] < 0
    assert p.summary()["drift"] == d
    drift_beats = [h["drift"] for h in pub.heartbeats]
    assert drift_beats[0]["state"] == "warming_up" and any(b["state"] == "ok" for b in drift_beats)
    for h in pub.heartbeats:
        check_status(h)  # the heartbeat schema accepts every one of them


def test_drift_window_restarts_on_set_threshold_and_on_reload(tiny_model_dir, tmp_path):
    second = make_tiny_model(tmp_path / "second", threshold=100.0)
    pub = RecordingPublisher()
    p = Pipeline(ScriptedSource(OK_IMG, count=None, interval_s=0.005), backend(tiny_model_dir), pub,
                 settings(drift={"min_samples": 10, "check_every": 5}), backend_factory=CountingFactory())
    p.start()
    def judged_at(threshold):  # OK verdicts published at this threshold so far (every part here is OK)
        return sum(v.threshold == threshold for v in list(pub.verdicts))

    try:
        wait_for(lambda: p.status()["drift"]["n"] >= 20)
        p.set_threshold(image=0.7)
        d = p.status()["drift"]
        assert d["n"] <= judged_at(0.7)  # the window holds only scores judged at the new threshold
        wait_for(lambda: p.status()["drift"]["threshold"] == 0.7 and p.status()["drift"]["n"] >= 12)
        p.reload(second)
        assert p.status()["drift"]["n"] <= judged_at(100.0)
        wait_for(lambda: p.status()["drift"]["threshold"] == 100.0)
        assert p.status()["drift"]["n"] <= judged_at(100.0)
    finally:
        p.stop(timeout=10)


def test_reload_whose_reply_cannot_be_sent_is_refused_before_the_swap(tiny_model_dir, tmp_path):
    """The reply is built and checked first: a failure there must not leave the new model in service
    behind an ok:false (the reported bug: refused, yet swapped in)."""
    second = make_tiny_model(tmp_path / "second", threshold=100.0)
    made = []

    def factory(model_dir, manifest):
        be = WrappedBackend(OnnxRuntimeBackend(model_dir, manifest))
        be.name = float("nan")  # its description cannot become JSON
        made.append(be)
        return be

    pub = RecordingPublisher()
    p = Pipeline(ScriptedSource(NG_IMG, count=None, interval_s=0.005), backend(tiny_model_dir), pub, settings(),
                 backend_factory=factory)
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 2)
        with pytest.raises(ModelError, match="cannot be described"):
            p.reload(second)
        n = len(pub.verdicts)
        wait_for(lambda: len(pub.verdicts) >= n + 3)
        status = p.status()
    finally:
        p.stop(timeout=10)
    assert status["generation"] == 0 and status["threshold"]["image"] == 0.5 and p.stats.get("reloads") == 0
    assert made and made[0].closed  # the refused model's backend was released
    assert {v.threshold for v in pub.verdicts} == {0.5}


def test_reload_queued_behind_a_slow_inference_says_so_and_takes_over(tiny_model_dir, tmp_path):
    import threading

    class HeldBackend(WrappedBackend):
        """infer() waits on ``release`` while ``hold`` is set (an inference that runs long)."""

        def __init__(self, inner):
            super().__init__(inner)
            self.hold, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

        def infer(self, inputs):
            if self.hold.is_set():
                self.entered.set()
                self.release.wait(10)
            return super().infer(inputs)

    second = make_tiny_model(tmp_path / "second", threshold=100.0)
    held = HeldBackend(OnnxRuntimeBackend(tiny_model_dir, load_manifest(tiny_model_dir)))
    pub = RecordingPublisher()
    p = Pipeline(ScriptedSource(NG_IMG, count=None, interval_s=0.005), held, pub, settings(),
                 backend_factory=CountingFactory())
    p.start()
    try:
        wait_for(lambda: len(pub.verdicts) >= 2)
        held.hold.set()
        assert held.entered.wait(5)  # an inference is in progress and will not end by itself
        reply = p.reload(second, timeout=0.05)
        assert reply["in_force"] is False and reply["generation"] == 1 and p.status()["generation"] == 0
        held.release.set()
        wait_for(lambda: p.status()["generation"] == 1)
        wait_for(lambda: pub.verdicts[-1].threshold == 100.0)
    finally:
        held.release.set()
        p.stop(timeout=10)
    assert held.closed and p.stats.get("reloads") == 1

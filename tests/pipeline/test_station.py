"""A station: several cameras, one shared model, one PUB socket (real publisher, real sources)."""

from __future__ import annotations

import json
import time
from collections import Counter

import cv2
import numpy as np
import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.camera.base import FrameSource
from edge_inspect.camera.uri import open_source
from edge_inspect.errors import CameraError, ConfigError, ProtocolError
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.runner import Pipeline
from edge_inspect.pipeline.station import build_station, first_camera_id
from edge_inspect.pipeline.station_settings import camera_entries, derive_camera_id
from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.publisher import VerdictPublisher
from edge_inspect.settings import Settings
from tests.pipeline.fakes import RecordingNotifier, RecordingPublisher, Wire, grey


def station_settings(model_dir, cameras, **pipeline):
    pipeline.setdefault("warmup_runs", 0)
    return Settings(
        model={"dir": model_dir},
        cameras=cameras,
        pipeline=pipeline,
        camera={"read_timeout_s": 0.2, "reconnect_initial_s": 0.02, "reconnect_max_s": 0.1},
        publisher={"bind": "tcp://127.0.0.1:*", "heartbeat_s": 0.05},
        station={"batch_wait_ms": 2.0, "max_batch": 4},  # batching on, whatever the backend
    )


class FlakySource(FrameSource):
    """A real source that is lost once: read number ``lose_at`` raises CameraError, and the next
    ``down_opens`` reopen attempts fail, as an unplugged camera's would; then it is back."""

    def __init__(self, inner: FrameSource, lose_at: int, down_opens: int = 2):
        self.inner, self.lose_at, self.down_opens = inner, lose_at, down_opens
        self.camera_id = inner.camera_id
        self.reads = self.opens = 0
        self.lost = False

    def open(self):
        self.opens += 1
        if self.lost and self.down_opens > 0:
            self.down_opens -= 1
            raise CameraError("cable unplugged")
        self.inner.open()

    def read(self, timeout: float = 1.0):
        self.reads += 1
        if self.reads == self.lose_at:
            self.lost = True
            raise CameraError("link down")
        return self.inner.read(timeout)

    def close(self):
        self.inner.close()


def image_folder(path, n):
    path.mkdir()
    for i in range(n):
        cv2.imwrite(str(path / f"{i:03d}.png"), grey(96, 96, blob=i % 3 == 0))
    return path


def run_station(settings, sources=None, timeout=60.0):
    """Build, start and run a station until every camera ended; (station, wire, publisher)."""
    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    wire = Wire(pub.endpoint)
    time.sleep(0.2)  # the subscription reaches the socket before the first verdict

    def opener(cam):
        src = open_source(cam)
        return (sources or {}).get(cam.camera_id, lambda s: s)(src)

    notifier = RecordingNotifier()
    station = build_station(settings, pub, notifier, open_source=opener)
    station.start()
    assert station.wait(timeout), "station did not finish"
    wire.close(grace_s=0.3)
    return station, wire, notifier


def test_two_synthetic_cameras_and_a_folder_one_lost_and_back(tiny_model_dir, tmp_path):
    folder = image_folder(tmp_path / "imgs", 12)
    cams = [
        {"id": "top", "uri": "synthetic://?fps=0&count=30&seed=1&size=96", "mode": "lossless"},
        {"id": "side", "uri": "synthetic://?fps=0&count=25&seed=2&size=96", "mode": "lossless"},
        {"uri": f"dir://{folder}"},  # id derived from the folder's name; auto: lossless for a recorded source
    ]
    flaky = {}

    def lose_side(src):
        flaky["side"] = FlakySource(src.raw if hasattr(src, "raw") else src, lose_at=8)
        return flaky["side"]

    station, wire, notifier = run_station(station_settings(tiny_model_dir, cams), sources={"side": lose_side})
    summary = station.summary()
    assert set(summary["cameras"]) == {"top", "side", "imgs"}
    expected = {"top": 30, "side": 25, "imgs": 12}
    by_camera: dict[str, list] = {c: [] for c in expected}
    for v in wire.verdicts:
        by_camera[v.camera_id].append(v)
    for cid, n in expected.items():
        c = summary["cameras"][cid]["counters"]
        assert c["frames_in"] == c["verdicts_out"] == n, cid
        assert c["verdicts_out"] == c["ok"] + c["ng"] + c["unknown"] and c["unknown"] == 0, cid
        msgs = by_camera[cid]
        assert [m.seq for m in msgs] == list(range(n)), f"{cid}: frame sequence not contiguous"
        assert [m.msg_seq for m in msgs] == list(range(n)), f"{cid}: msg_seq is per camera"
    # the lost camera reconnected while the others went on; it lost no frame (a recorded-like source)
    side = summary["cameras"]["side"]["counters"]
    assert side["reconnects"] == 1 and side["camera_errors"] >= 2 and flaky["side"].opens >= 3
    # every camera has its own heartbeat topic, ending with "stopped"
    beats = {c: [h for h in wire.heartbeats if h.camera_id == c] for c in expected}
    assert {h.camera_id for h in wire.heartbeats} == set(expected)  # no heartbeat for a camera not here
    assert all(beats[c] and beats[c][-1].status["state"] == "stopped" for c in expected)
    def camera_state(h):  # a beat sent before the pipeline attached its status carries only "state"
        return h.status.get("camera", {}).get("state")

    assert any(camera_state(h) == "reconnecting" for h in beats["side"])
    assert all(camera_state(h) != "reconnecting" for h in beats["top"] + beats["imgs"])
    # the folder's verdicts follow its images: blobs (every third) are NG
    assert [m.result_state for m in by_camera["imgs"]] == ["ng" if i % 3 == 0 else "ok" for i in range(12)]
    # one model in memory for all three; systemd heard READY once and a STATUS per camera
    (model,) = summary["hub"]
    assert model["images"] == 67 and model["used_by"] == ["imgs", "side", "top"] and not model["loaded"]
    assert notifier.events.count("ready") == 1
    assert any(e.startswith("status:") and "top:" in e and "side:" in e for e in notifier.events)
    assert summary["counters"]["verdicts_out"] == 67 and summary["in_flight"] == 0


def test_station_scores_equal_lone_pipeline_scores(tiny_model_dir):
    """The same synthetic frames judged by a camera alone and by a station of three (batched): same scores."""
    uri = "synthetic://?fps=0&count=20&seed=5&size=96"
    alone_pub = RecordingPublisher()
    s_alone = station_settings(tiny_model_dir, [], mode="lossless")
    s_alone.camera.uri, s_alone.camera.camera_id = uri, "a"
    p = Pipeline(open_source(s_alone.camera), OnnxRuntimeBackend(tiny_model_dir, load_manifest(tiny_model_dir)),
                 alone_pub, s_alone)
    p.start()
    assert p.wait(30)
    cams = [{"id": cid, "uri": uri, "mode": "lossless"} for cid in ("a", "b", "c")]
    station, wire, _ = run_station(station_settings(tiny_model_dir, cams, mode="lossless"))
    alone = [v.score for v in alone_pub.verdicts]
    assert len(alone) == 20 and len(set(alone)) > 5
    for cid in ("a", "b", "c"):
        got = [m.score for m in wire.verdicts if m.camera_id == cid]
        np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
    (model,) = station.summary()["hub"]
    assert model["images"] == 60 and model["batches"] < 60  # some frames did run together


def test_triggered_camera_beside_a_free_running_one_gets_one_verdict_per_trigger(tiny_model_dir):
    cams = [{"id": "free", "uri": "synthetic://?fps=0&size=96", "mode": "free-run"},
            {"id": "trig", "uri": "synthetic://?fps=0&size=96", "mode": "trigger", "infer_timeout_s": 2.0}]
    settings = station_settings(tiny_model_dir, cams)
    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    wire = Wire(pub.endpoint)
    station = build_station(settings, pub, RecordingNotifier())
    station.start()
    try:
        with pytest.raises(ProtocolError, match="name one"):
            station.trigger("p0")  # two cameras: which one?
        parts = [f"part-{i}" for i in range(10)]
        for part in parts:
            station.trigger(part, camera="trig")
            time.sleep(0.03)
        deadline = time.monotonic() + 20
        while station.status("trig")["counters"]["verdicts_out"] < len(parts) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        station.stop()
    wire.close(grace_s=0.3)
    trig = [m for m in wire.verdicts if m.camera_id == "trig"]
    assert [m.part_id for m in trig] == parts  # exactly one verdict per trigger, in order
    c = station.summary()["cameras"]["trig"]["counters"]
    assert c["frames_in"] == c["verdicts_out"] == len(parts) and c["timeouts"] == c["unknown"] == 0
    free = station.summary()["cameras"]["free"]["counters"]
    assert free["verdicts_out"] > len(parts)  # the free-running camera ran all along


def test_control_commands_name_a_camera(tiny_model_dir, tmp_path):
    from tests.fixtures.tiny_model import make_tiny_model

    other = make_tiny_model(tmp_path / "other", threshold=0.9)
    cams = [{"id": "a", "uri": "synthetic://?fps=20&size=96"},
            {"id": "b", "uri": "synthetic://?fps=20&size=96", "image_threshold": 0.7}]
    settings = station_settings(tiny_model_dir, cams)
    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    station = build_station(settings, pub, RecordingNotifier())
    station.start()
    try:
        st = station.status()
        assert set(st["cameras"]) == {"a", "b"} and st["cameras"]["b"]["threshold"]["image"] == 0.7
        assert st["cameras"]["a"]["threshold"]["image"] == 0.5  # the manifest's
        for call in (lambda: station.set_threshold(0.6), lambda: station.reload(other)):
            with pytest.raises(ProtocolError, match="name one"):
                call()
        with pytest.raises(ProtocolError, match="no camera 'c'"):
            station.set_threshold(0.6, camera="c")
        assert station.set_threshold(0.6, camera="a")["image"] == 0.6
        assert station.status("b")["threshold"]["image"] == 0.7  # b untouched
        reply = station.reload(other, camera="b")
        assert reply["camera"] == "b" and reply["threshold"]["image"] == pytest.approx(0.7)  # b's override stays
        models = sorted(tuple(m["cameras"]) for m in station.status()["hub"])
        assert models == [("a",), ("b",)]  # two folders, two models
        # the same over the control channel's request handler
        server = ControlServer(settings.control, settings.security, target=station, publisher=pub)
        reply = json.loads(server.handle(b'{"cmd": "set_threshold", "image": 0.65, "camera": "a"}'))
        assert reply["ok"] and reply["result"] == {"image": 0.65, "pixel": 0.5, "source": "runtime", "camera": "a"}
        reply = json.loads(server.handle(b'{"cmd": "trigger", "part_id": "x"}'))
        assert not reply["ok"] and "name one" in reply["error"]
        reply = json.loads(server.handle(b'{"cmd": "status", "camera": "b"}'))
        assert reply["ok"] and reply["result"]["camera"]["id"] == "b"
        time.sleep(0.3)
        reply = json.loads(server.handle(b'{"cmd": "last", "n": 2, "camera": "b"}'))
        assert reply["ok"] and reply["result"]["camera_id"] == "b"
        assert {v["camera_id"] for v in reply["result"]["verdicts"]} == {"b"} and reply["result"]["verdicts"]
    finally:
        station.stop()


def test_watchdog_only_while_every_camera_loop_is_alive(tiny_model_dir):
    cams = [{"id": "a", "uri": "synthetic://?fps=50&size=96"}, {"id": "b", "uri": "synthetic://?fps=50&size=96"}]
    settings = station_settings(tiny_model_dir, cams)
    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    notifier = RecordingNotifier()
    station = build_station(settings, pub, notifier)
    station.start()
    try:
        time.sleep(0.5)
        assert notifier.events.count("watchdog") > 0  # both loops alive: fed
        window = station._watchdog_window_s
        n = notifier.events.count("watchdog")
        station._alive["b"] = time.monotonic() - 10 * window  # as if b's loop had stopped pinging...
        station._camera_alive("a")  # ... a alone does not feed the watchdog
        assert notifier.events.count("watchdog") == n
        station._camera_alive("b")
        assert notifier.events.count("watchdog") == n + 1
    finally:
        station.stop()
    assert notifier.events.count("stopping") == 1


def test_camera_ids_are_derived_and_unique():
    from edge_inspect.pipeline.station_settings import CameraEntry

    assert derive_camera_id("gige://192.168.10.20", 0) == "192-168-10-20"
    assert derive_camera_id("dir://data/top_view", 1) == "top_view"
    assert derive_camera_id("synthetic://?fps=5", 2) == "cam2"
    entries = [CameraEntry(uri="synthetic://"), CameraEntry(uri="dir://x/imgs"), CameraEntry(uri="dir://y/imgs"),
               CameraEntry(id="cam0", uri="synthetic://")]
    ids = [cid for cid, _ in camera_entries(entries)]
    assert ids == ["cam0-0", "imgs", "imgs-2", "cam0"] and len(set(ids)) == 4
    counts = Counter(ids)
    assert max(counts.values()) == 1


def test_duplicate_ids_and_missing_models_are_config_errors(tiny_model_dir):
    settings = station_settings(tiny_model_dir, [{"id": "a", "uri": "synthetic://"}, {"id": "a", "uri": "synthetic://"}])
    pub = RecordingPublisher()
    pub.channel = lambda cid: RecordingPublisher()
    with pytest.raises(ConfigError, match="unique"):
        build_station(settings, pub)
    settings = station_settings(None, [{"id": "a", "uri": "synthetic://"}])
    with pytest.raises(ConfigError, match="no model folder"):
        build_station(settings, pub)
    assert np.isfinite(1.0)


def test_one_camera_control_target_accepts_only_its_own_camera(tiny_model_dir):
    settings = station_settings(tiny_model_dir, [])
    src = open_source(settings.camera)  # camera_id "cam0"
    p = Pipeline(src, OnnxRuntimeBackend(tiny_model_dir, load_manifest(tiny_model_dir)), RecordingPublisher(), settings)
    server = ControlServer(settings.control, settings.security, target=p)
    p.start()
    try:
        assert json.loads(server.handle(b'{"cmd": "status", "camera": "cam0"}'))["ok"]
        reply = json.loads(server.handle(b'{"cmd": "set_threshold", "image": 0.6, "camera": "top"}'))
        assert not reply["ok"] and "no camera 'top'" in reply["error"]
        assert p.thresholds.image == 0.5  # nothing changed
    finally:
        p.stop()


class OverlapObserver:
    """A result observer that notes each part's camera, and whether two offers ever ran at once."""

    name = "overlap"

    def __init__(self):
        self.cameras: list[str] = []
        self.inside = False
        self.overlapped = False

    def offer(self, result) -> None:
        if self.inside:
            self.overlapped = True
        self.inside = True
        time.sleep(0.002)  # widens the window a second decide thread would hit without the station's lock
        self.cameras.append(result.camera_id)
        self.inside = False

    def stats(self) -> dict:
        return {"offered": len(self.cameras)}


def test_observers_see_every_cameras_parts_one_offer_at_a_time(tiny_model_dir):
    cams = [{"id": "top", "uri": "synthetic://?fps=0&size=64&count=40"},
            {"id": "side", "uri": "synthetic://?fps=0&size=64&count=40&seed=3"}]
    settings = station_settings(tiny_model_dir, cams, mode="lossless")
    observer = OverlapObserver()
    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    station = build_station(settings, pub, RecordingNotifier(), observers=[observer])
    station.start()
    assert station.wait(60), "station did not finish"
    counts = Counter(observer.cameras)
    assert counts == {"top": 40, "side": 40}  # every published part of each camera, tagged with its camera
    assert not observer.overlapped
    assert station.status("top")["observers"] == {"overlap": {"offered": 80}}  # the one shared observer

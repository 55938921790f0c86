"""A station of two synthetic cameras with the live view and the archive (cli._outputs.LineOutputs, as ``run``
builds them): one tile per camera in the JSON state, each camera's frame served, NG thumbnails tagged with
their camera, and the archive holding both cameras' parts under their ids. Also the view's per-camera
slots: a fast camera never keeps a slow camera's tile from being drawn."""

from __future__ import annotations

import contextlib
import json
import time

from edge_inspect.archive.index import Filters, open_index
from edge_inspect.cli._outputs import LineOutputs
from edge_inspect.pipeline.station import build_station, first_camera_id
from edge_inspect.protocol.publisher import VerdictPublisher
from edge_inspect.settings import Settings
from edge_inspect.view.live import ViewObserver
from edge_inspect.view.settings import ViewSettings
from tests.archive.parts import part
from tests.pipeline.fakes import RecordingNotifier
from tests.view.test_server import get, wait_for


@contextlib.contextmanager
def running_station(model_dir, archive_dir, token: str | None = "s3cret", fps: float = 10.0):
    """(station, outputs) of a running two-camera station (``top`` fast, ``side`` slow) with view and archive."""
    settings = Settings(
        model={"dir": model_dir},
        cameras=[{"id": "top", "uri": "synthetic://?fps=25&size=96&defect_rate=0.4&seed=1"},
                 {"id": "side", "uri": "synthetic://?fps=8&size=80&defect_rate=0.4&seed=2"}],
        pipeline={"warmup_runs": 0, "mode": "free-run"},
        publisher={"bind": "tcp://127.0.0.1:*", "heartbeat_s": 0.2},
        view={"enabled": True, "bind": "127.0.0.1:0", "token": token, "fps": fps, "trend_parts": 50},
        archive={"enabled": True, "dir": str(archive_dir), "ok_sample": 0.5},
    )
    outputs = LineOutputs(settings)  # bound before the models load, as run_station does
    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    station = build_station(settings, pub, RecordingNotifier(), observers=outputs.observers)
    outputs.start(station.status)
    station.start()
    try:
        yield station, outputs
    finally:
        station.stop()
        outputs.close()


def test_station_view_has_a_tile_per_camera_and_the_archive_both_cameras(tiny_model_dir, tmp_path):
    with running_station(tiny_model_dir, tmp_path / "arch") as (station, outputs):
        base = outputs._server.url
        tok = "token=s3cret"

        def tiles_judged():
            s = json.loads(get(base + "api/state?" + tok)[1])
            tiles = {t["id"]: t for t in s["cameras"]}
            ok = set(tiles) == {"top", "side"} and all(
                t["counters"]["verdicts_out"] > 5 and t.get("part") and t["frame"] for t in tiles.values())
            return ok and (s, tiles)

        state, tiles = wait_for(tiles_judged, timeout=30)
        assert [t["id"] for t in state["cameras"]] == ["top", "side"]  # the station's order, from its status
        for cid, tile in tiles.items():
            assert tile["part"]["camera_id"] == cid and tile["camera"]["id"] == cid
            assert tile["model"]["model_id"] == "tiny-test-model" and tile["state"] == "running"
            assert tile["trend"] and tile["calibration"]["image_threshold"] == 0.5
            c = tile["counters"]
            assert c["ok"] + c["ng"] + c["unknown"] <= c["verdicts_out"] <= c["frames_in"]
        # each tile counts its own camera: the fast camera judged more than the slow one
        assert tiles["top"]["counters"]["frames_in"] > tiles["side"]["counters"]["frames_in"]
        assert state["state"] == "running" and state["observers"]["archive"]["offered"] > 0

        # each camera's own frame (the two synthetic cameras render different sizes: 96 and 80 px)
        import cv2
        import numpy as np

        shapes = {}
        for cid in ("top", "side"):
            code, jpeg, ctype = get(base + f"frame.jpg?camera={cid}&{tok}")
            assert code == 200 and ctype == "image/jpeg"
            shapes[cid] = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        assert shapes == {"top": (96, 96), "side": (80, 80)}

        # NG thumbnails tagged with their camera, both cameras among them sooner or later
        ng = wait_for(lambda: {t["camera_id"] for t in json.loads(get(base + "api/state?" + tok)[1])["ng"]}
                      == {"top", "side"} and json.loads(get(base + "api/state?" + tok)[1])["ng"], timeout=30)
        assert get(base + f"ng/{ng[-1]['key']}.jpg?{tok}")[0] == 200
        archive = outputs.observers[-1]
        counts = {cid: station.pipelines[cid].status()["counters"] for cid in ("top", "side")}
    # closed after the drain: everything queued was written
    index = open_index(tmp_path / "arch", None)
    try:
        rows = index.query(Filters())
        for cid in ("top", "side"):
            mine = [r for r in rows if r["camera_id"] == cid]
            assert mine and {r["label"] for r in mine} <= {"ok", "ng", "unknown"}
            assert all(r["image_path"].split("/")[1] == cid for r in mine)  # filed in the camera's folder
            ng_rows = [r for r in mine if r["label"] == "ng"]
            assert len(ng_rows) >= counts[cid]["ng"]  # every NG part of this camera (more judged while draining)
            assert len({r["seq"] for r in mine}) == len(mine)  # one row per part of this camera
            assert [r["camera_id"] for r in index.query(Filters(camera_id=cid))] == [cid] * len(mine)
    finally:
        index.close()
    s = archive.stats()
    assert s["errors"] == 0 and s["dropped"] == 0 and s["stored"] == len(rows)


def test_a_fast_camera_never_starves_a_slow_cameras_tile(tiny_model_dir):
    view = ViewObserver(ViewSettings(fps=30))
    view.start()
    try:
        for seq in range(200):  # a fast camera floods the view; the slow camera sends one part in between
            view.offer(part(tiny_model_dir, seq, "ok", camera_id="fast"))
            if seq == 100:
                view.offer(part(tiny_model_dir, 7, "ng", camera_id="slow"))
        state = wait_for(lambda: (s := view.live.snapshot()[1])["cameras"] and len(s["cameras"]) == 2
                         and s["cameras"][1].get("part") and s)
    finally:
        view.close()
    fast, slow = state["cameras"]
    assert (fast["id"], slow["id"]) == ("fast", "slow")
    assert slow["part"]["seq"] == 7 and slow["part"]["label"] == "ng" and view.live.frame("slow") is not None
    assert [t["seq"] for t in slow["trend"]] == [7] and len(fast["trend"]) >= 101  # every part so far
    assert state["ng"][0]["camera_id"] == "slow"


def test_view_paces_each_camera_at_fps(tiny_model_dir):
    view = ViewObserver(ViewSettings(fps=5))
    view.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 1.5:  # two cameras offering ~200 parts/s each for 1.5 s
            for cid in ("a", "b"):
                view.offer(part(tiny_model_dir, 1, "ok", camera_id=cid))
            time.sleep(0.005)
    finally:
        view.close()
    versions = {t["id"]: t["frame"] for t in view.live.snapshot()[1]["cameras"]}
    # at most 5 frames a second per camera (first one at once): ≤ 1 + 5 × 1.5 each, and both drawn
    assert set(versions) == {"a", "b"} and all(2 <= v <= 9 for v in versions.values()), versions


def test_tiles_follow_the_station_status_between_parts(tiny_model_dir):
    """A camera that sends no parts (lost) still has its tile, from the station's status (``cameras`` shape)."""
    status = {"state": "running", "cameras": {
        "top": {"state": "running", "camera": {"id": "top", "state": "ok"}, "counters": {"verdicts_out": 9},
                "observers": {"view": {"offered": 9}}},
        "side": {"state": "running", "camera": {"id": "side", "state": "lost", "error": "link down"},
                 "counters": {"frames_in": 3, "verdicts_out": 3}}}}
    view = ViewObserver(ViewSettings())
    view.attach_status(lambda: status)
    view.offer(part(tiny_model_dir, 9, "ng", camera_id="top"))
    view.handle(view._take(0.1))
    state = view.live.snapshot()[1]
    top, side = state["cameras"]
    assert (top["id"], side["id"]) == ("top", "side") and state["state"] == "running"
    assert top["part"]["seq"] == 9 and top["frame"] == 1 and top["counters"]["verdicts_out"] == 9
    assert "part" not in side and side["frame"] is None and side["trend"] == []
    assert side["camera"] == {"id": "side", "state": "lost", "error": "link down"}
    assert side["counters"]["verdicts_out"] == 3 and state["observers"] == {"view": {"offered": 9}}
    status["cameras"]["side"]["camera"]["state"] = "ok"  # back: the next reading shows it without a part
    view._t_status = -1e9
    view.idle()
    assert view.live.snapshot()[1]["cameras"][1]["camera"]["state"] == "ok"

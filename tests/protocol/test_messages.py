"""Wire format: round trips and strict refusal of malformed messages (no sockets)."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import replace

import numpy as np
import pytest

from edge_inspect.errors import ProtocolError
from edge_inspect.protocol.messages import (
    ControlReply,
    ControlRequest,
    HeartbeatMsg,
    VerdictMsg,
    format_time,
    parse_time,
)
from edge_inspect.verdict import Region
from tests.protocol.helpers import make_verdict

BOOT = str(uuid.uuid4())


def _msg(seq=3, label="ng", heatmap=False, **kw) -> VerdictMsg:
    return VerdictMsg.from_verdict(make_verdict(seq, label, heatmap=heatmap, **kw), "line1", BOOT, msg_seq=seq + 10)


def _frames_with(mutate) -> list[bytes]:
    frames = _msg().to_frames()
    body = json.loads(frames[1])
    mutate(body)
    return [frames[0], json.dumps(body).encode()]


@pytest.mark.parametrize("label", ["ok", "ng", "unknown"])
def test_verdict_round_trip(label):
    msg = _msg(label=label)
    frames = msg.to_frames()
    assert frames[0] == b"verdict.line1.cam0" and len(frames) == 2
    back = VerdictMsg.from_frames(frames)
    assert back == msg
    body = json.loads(frames[1])
    assert body["schema"] == "edge-inspect/verdict" and body["version"] == 1
    assert body["result_state"] == label and body["msg_seq"] == 13 and body["seq"] == 3
    assert body["capture_time"].endswith("Z") and len(body["capture_time"]) == 24


def test_verdict_heatmap_frame_round_trip():
    msg = _msg(heatmap=True)
    frames = msg.to_frames()
    assert len(frames) == 3 and len(frames[2]) == 48 * 64
    assert json.loads(frames[1])["heatmap"] == {"encoding": "raw", "dtype": "uint8", "shape": [48, 64]}
    back = VerdictMsg.from_frames(frames)
    assert back.heatmap.dtype == np.uint8 and back.heatmap.shape == (48, 64)
    assert back.heatmap[0, 0] == 0 and back.heatmap[-1, -1] == 255
    np.testing.assert_array_equal(back.heatmap, msg.heatmap)


def test_time_format_has_ms_and_round_trips():
    t = 1714564800.1234
    text = format_time(t)
    assert text == "2024-05-01T12:00:00.123Z"
    assert abs(parse_time(text) - t) < 0.001


def test_non_finite_score_becomes_unknown_with_reason():
    v = make_verdict(1, "ok")
    v.score = float("nan")
    msg = VerdictMsg.from_verdict(v, "line1", BOOT, msg_seq=0)
    assert msg.result_state == "unknown" and msg.score is None and "non-finite" in msg.error
    VerdictMsg.from_frames(msg.to_frames())  # and it is still valid on the wire


def test_from_verdict_refuses_topic_unsafe_ids():
    with pytest.raises(ProtocolError, match="camera_id"):
        VerdictMsg.from_verdict(make_verdict(1, camera_id="cam.0"), "line1", BOOT, msg_seq=0)
    with pytest.raises(ProtocolError, match="line_id"):
        VerdictMsg.from_verdict(make_verdict(1), "line 1", BOOT, msg_seq=0)


MALFORMED_BODIES = {
    "wrong schema": lambda b: b.update(schema="other"),
    "newer version": lambda b: b.update(version=2),
    "bool seq": lambda b: b.update(seq=True),
    "negative seq": lambda b: b.update(seq=-1),
    "float msg_seq": lambda b: b.update(msg_seq=1.5),
    "missing boot_id": lambda b: b.pop("boot_id"),
    "bad boot_id": lambda b: b.update(boot_id="not-a-uuid"),
    "time without ms": lambda b: b.update(capture_time="2024-05-01T12:00:00Z"),
    "time not UTC": lambda b: b.update(decision_time="2024-05-01T12:00:00.000+02:00"),
    "impossible date": lambda b: b.update(capture_time="2024-13-45T12:00:00.000Z"),
    "bad state": lambda b: b.update(result_state="NG"),
    "ng without score": lambda b: b.update(score=None),
    "string score": lambda b: b.update(score="6.0"),
    "region not object": lambda b: b.update(regions=[1]),
    "region negative": lambda b: b["regions"][0].update(w=-3),
    "latency negative": lambda b: b["latency_ms"].update(infer=-1.0),
    "heatmap header without frame": lambda b: b.update(heatmap={"encoding": "raw", "dtype": "uint8", "shape": [2, 2]}),
    "body camera differs from topic": lambda b: b.update(camera_id="cam9"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_BODIES))
def test_malformed_verdict_bodies_are_refused(name):
    with pytest.raises(ProtocolError):
        VerdictMsg.from_frames(_frames_with(MALFORMED_BODIES[name]))


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"verdict.line1.cam0"],
        [b"verdict.line1", b"{}"],
        [b"heartbeat.line1.cam0", b"{}"],
        [b"verdict.line1.cam0", b"not json"],
        [b"verdict.line1.cam0", b"[1, 2]"],
        [b"verdict.line1.cam0", b'{"score": NaN}'],
        [b"verdict.line1.cam0", b"\xff\xfe"],
        [b"verdict.line1.cam0", "str, not bytes"],
        "not a list",
    ],
)
def test_malformed_frames_are_refused(frames):
    with pytest.raises(ProtocolError):
        VerdictMsg.from_frames(frames)


def test_heatmap_frame_of_wrong_length_is_refused():
    frames = _msg(heatmap=True).to_frames()
    with pytest.raises(ProtocolError, match="heatmap"):
        VerdictMsg.from_frames(frames[:2] + [frames[2][:-1]])
    with pytest.raises(ProtocolError, match="heatmap"):
        VerdictMsg.from_frames(_msg().to_frames() + [b"\x00" * 4])


def test_unknown_extra_fields_are_ignored_for_additive_growth():
    frames = _frames_with(lambda b: b.update(new_field_in_v1_1={"x": 1}))
    assert VerdictMsg.from_frames(frames).seq == 3


def test_heartbeat_round_trip_and_status_types():
    hb = HeartbeatMsg("line1", "cam0", BOOT, format_time(0.0), 12.5, 1.0, 41,
                      status={"state": "running", "fps": 29.7, "drops": 3, "errors": 0, "backend": "onnxruntime"},
                      publisher={"published": 42, "dropped": 0})
    frames = hb.to_frames()
    assert frames[0] == b"heartbeat.line1.cam0"
    assert HeartbeatMsg.from_frames(frames) == hb
    bad = json.loads(frames[1])
    bad["status"]["fps"] = "fast"
    with pytest.raises(ProtocolError, match="fps"):
        HeartbeatMsg.from_frames([frames[0], json.dumps(bad).encode()])


DRIFT = {"state": "drift", "n": 500, "window": 500, "median": 0.41, "calibration_median": 0.33, "shift_sigma": 1.6,
         "spread_ratio": 1.1, "estimated_frr": 0.071, "target_frr": 0.005, "alert_frr": 0.02, "ng_share": 0.09,
         "threshold": 0.52}


def _heartbeat(status) -> HeartbeatMsg:
    return HeartbeatMsg("line1", "cam0", BOOT, format_time(0.0), 1.0, 1.0, 7, status=status, publisher={})


def test_heartbeat_drift_block_round_trips_and_may_hold_nulls_while_warming_up():
    hb = _heartbeat({"state": "running", "fps": 30.0, "publish_errors": 0, "drift": DRIFT})
    assert HeartbeatMsg.from_frames(hb.to_frames()).status["drift"] == DRIFT
    warming = {**dict.fromkeys(DRIFT), "state": "warming_up", "n": 12, "window": 500}
    assert HeartbeatMsg.from_frames(_heartbeat({"drift": warming}).to_frames()).status["drift"]["median"] is None
    shifted_down = {**DRIFT, "shift_sigma": -2.5, "median": -0.3, "threshold": -0.1}  # fused z-scores go negative
    assert _heartbeat({"drift": shifted_down}).to_frames()


@pytest.mark.parametrize("status, field", [
    ({"drift": "ok"}, "body.status.drift"),
    ({"drift": {"n": 3}}, "body.status.drift.state"),
    ({"drift": {**DRIFT, "state": "panic"}}, "body.status.drift.state"),
    ({"drift": {**DRIFT, "n": -1}}, "body.status.drift.n"),
    ({"drift": {**DRIFT, "n": 2.5}}, "body.status.drift.n"),
    ({"drift": {**DRIFT, "estimated_frr": 1.5}}, "body.status.drift.estimated_frr"),
    ({"drift": {**DRIFT, "ng_share": -0.1}}, "body.status.drift.ng_share"),
    ({"drift": {**DRIFT, "median": "high"}}, "body.status.drift.median"),
    ({"publish_errors": -1}, "body.status.publish_errors"),
    ({"errors": "many"}, "body.status.errors"),  # the existing keys stay strict
])
def test_heartbeat_status_is_validated_strictly(status, field):
    with pytest.raises(ProtocolError, match=field.replace(".", r"\.")):
        _heartbeat(status).to_frames()
    frames = _heartbeat({}).to_frames()
    body = json.loads(frames[1])
    body["status"] = status
    with pytest.raises(ProtocolError, match=field.replace(".", r"\.")):
        HeartbeatMsg.from_frames([frames[0], json.dumps(body).encode()])


def test_control_request_parsing():
    req = ControlRequest.from_frames([b'{"cmd": "set_threshold", "image": 0.7, "id": 5}'])
    assert (req.cmd, req.args, req.id) == ("set_threshold", {"image": 0.7, "pixel": None}, 5)
    assert ControlRequest.from_frames(ControlRequest("last", {"since_seq": -1, "n": 3}).to_frames()).args == {
        "since_seq": -1, "n": 3}
    # any finite number passes the protocol: the range is the model's (fused z-scores may be negative),
    # checked by the pipeline (decision.Thresholds)
    req = ControlRequest.from_frames([b'{"cmd": "set_threshold", "image": -1.5}'])
    assert req.args == {"image": -1.5, "pixel": None}
    assert ControlRequest.from_frames([b'{"cmd": "set_threshold", "pixel": 0}']).args == {"image": None, "pixel": 0.0}
    for raw, match in [
        (b'{"cmd": "set_threshold"}', "image"),
        (b'{"cmd": "set_threshold", "image": null, "pixel": null}', "image"),
        (b'{"cmd": "set_threshold", "image": NaN}', "NaN"),
        (b'{"cmd": "set_threshold", "pixel": -Infinity}', "Infinity"),
        (b'{"cmd": "set_threshold", "image": true}', "number"),
        (b'{"cmd": "set_threshold", "image": 1e999}', "finite"),
        (b'{"cmd": "last", "n": 0}', "range"),
        (b'{"cmd": "trigger"}', "part_id"),
        (b'{"cmd": "trigger", "part_id": "a\\nb"}', "printable"),
        (b'{"cmd": "reload", "model_dir": 3}', "string"),
        (b'{"cmd": "ping", "extra": 1}', "unknown argument"),
        (b'{"cmd": "shutdown"}', "unknown command"),
        (b'{"command": "ping"}', "cmd"),
    ]:
        with pytest.raises(ProtocolError, match=match):
            ControlRequest.from_frames([raw])


def test_control_reply_round_trip():
    ok = ControlReply(ok=True, cmd="ping", result={"pong": True}, id="a1")
    assert ControlReply.from_frames(ok.to_frames()) == ok
    err = ControlReply(ok=False, cmd="trigger", error="camera gone", id=7)
    assert ControlReply.from_frames(err.to_frames()) == err
    assert math.isclose(json.loads(ok.to_frames()[0])["result"]["pong"], 1)


def test_models_refuse_in_python_as_on_the_wire_with_one_line_naming_the_field():
    # The constructor validates like the decoder, and raises ProtocolError, never a pydantic ValidationError.
    for build, field in [
        (lambda: HeartbeatMsg("line.1", "cam0", BOOT, format_time(0.0), 1.0, 1.0, 7), "body.line_id"),
        (lambda: HeartbeatMsg("line1", "cam0", BOOT, format_time(0.0), -1.0, 1.0, 7), "body.uptime_s"),
        (lambda: HeartbeatMsg("line1", "cam0", BOOT, "yesterday", 1.0, 1.0, 7), "body.time"),
        (lambda: replace(_msg(), seq=True), "body.seq"),
        (lambda: replace(_msg(), regions=[Region(1, 2, 3, 4, 5, float("nan"))]), "body.regions[0].peak"),
        (lambda: replace(_msg(), result_state="ok", score=None), "body.score"),
    ]:
        with pytest.raises(ProtocolError, match=field.replace(".", r"\.").replace("[", r"\[")) as info:
            build()
        assert "\n" not in str(info.value) and "validation error" not in str(info.value)


def test_messages_stay_dataclasses_the_publisher_can_copy_and_number():
    msg = _msg(heatmap=True)
    kept = replace(msg, heatmap=None)  # what the publisher stores in its history
    assert kept.heatmap is None and kept.seq == msg.seq and json.loads(kept.to_frames()[1])["heatmap"] is None
    kept.msg_seq = 99
    assert VerdictMsg.from_frames(kept.to_frames()).msg_seq == 99
    body = json.loads(msg.to_frames()[1])
    assert list(body)[:2] == ["schema", "version"] and list(body)[-1] == "heatmap"  # the wire's key order


def test_every_body_field_is_required_even_where_python_has_a_default():
    for key in ("schema", "version", "heatmap", "part_id", "error"):
        with pytest.raises(ProtocolError, match=rf"body\.{key}: missing"):
            VerdictMsg.from_frames(_frames_with(lambda b, k=key: b.pop(k)))
    frames = _heartbeat({}).to_frames()
    body = json.loads(frames[1])
    del body["publisher"]
    with pytest.raises(ProtocolError, match=r"body\.publisher: missing"):
        HeartbeatMsg.from_frames([frames[0], json.dumps(body).encode()])


def test_control_reply_clips_a_long_error_and_refuses_a_silent_one():
    long = ControlReply(ok=False, cmd="reload", error="x" * 10_000)
    assert len(long.error) == 4096 and ControlReply.from_frames(long.to_frames()).error == long.error
    with pytest.raises(ProtocolError, match=r"reply\.error: missing"):
        ControlReply.from_frames([b'{"ok": false}'])
    with pytest.raises(ProtocolError, match=r"reply\.ok"):
        ControlReply.from_frames([b'{"ok": 1, "result": null}'])
    assert ControlReply.from_frames([b'{"ok": true, "id": [1], "result": 3}']).id is None  # a bad id is ignored

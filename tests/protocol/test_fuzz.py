"""Hypothesis fuzz of the message decoders and the control request handler: no input may crash them.

Every input either decodes to a message that re-encodes to itself, or raises ProtocolError (decoders);
the control handler always answers one valid reply and calls the pipeline only for valid requests.
The number of inputs tried is printed in pytest's summary; the default run tries 500 per test, the
``slow`` tests 2000 more each.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_inspect.errors import ProtocolError
from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.messages import CONTROL_COMMANDS, ControlReply, HeartbeatMsg, VerdictMsg
from edge_inspect.protocol.settings import ControlSettings, SecuritySettings
from edge_inspect.verdict import Region, Verdict
from tests.protocol.helpers import report

TRIED: Counter = Counter()
FAST = settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z")
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)

verdicts = st.builds(
    Verdict,
    camera_id=ids,
    seq=st.integers(0, 2**40),
    label=st.sampled_from(["ok", "ng", "unknown"]),
    score=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    normalised_score=st.none() | finite,
    threshold=finite,
    t_capture_wall=st.floats(0, 4e9),
    t_decision_wall=st.floats(0, 4e9),
    part_id=st.none() | st.text(max_size=30),
    regions=st.lists(st.builds(Region, *[st.integers(0, 10_000)] * 5, finite), max_size=3),
    latency_ms=st.dictionaries(st.text(min_size=1, max_size=12), st.floats(-1, 1e4), max_size=4),
    error=st.none() | st.text(max_size=30),
    model_id=st.text(max_size=12),
    model_version=st.text(max_size=12),
)


def _valid_frames() -> list[bytes]:
    v = Verdict("cam0", 7, "ng", 6.0, 12.0, 0.5, 1714564800.0, 1714564800.01, part_id="P7",
                regions=[Region(1, 2, 3, 4, 12, 0.9)], latency_ms={"infer": 8.0})
    return VerdictMsg.from_verdict(v, "line1", str(uuid.uuid4()), msg_seq=3).to_frames()


VALID = _valid_frames()
VALID_BODY = json.loads(VALID[1])


def _decode_or_refuse(frames) -> None:
    TRIED["decoder"] += 1
    for cls in (VerdictMsg, HeartbeatMsg):
        try:
            msg = cls.from_frames(frames)
        except ProtocolError:
            continue
        assert cls.from_frames(msg.to_frames()) == msg  # anything accepted re-encodes to itself


@FAST
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_decoders_on_random_frames(frames):
    _decode_or_refuse(frames)


@FAST
@given(st.lists(st.sampled_from(list(VALID_BODY)) | st.text(max_size=8), min_size=1, max_size=3),
       st.lists(json_values, min_size=3, max_size=3), st.booleans(), st.booleans())
def test_decoders_on_mutated_valid_bodies(keys, values, delete, swap_topic):
    body = dict(VALID_BODY)
    for key, value in zip(keys, values, strict=False):
        if delete:
            body.pop(key, None)
        else:
            body[key] = value
    topic = b"heartbeat.line1.cam0" if swap_topic else VALID[0]
    _decode_or_refuse([topic, json.dumps(body).encode()])


@FAST
@given(st.binary(max_size=64), st.integers(0, 2))
def test_decoders_on_corrupted_wire_bytes(noise, where):
    frames = list(VALID)
    raw = bytearray(frames[1])
    pos = len(noise) * 7 % len(raw)
    raw[pos:pos + len(noise)] = noise if where else noise[: len(raw) - pos]
    frames[1] = bytes(raw)
    _decode_or_refuse(frames)


@FAST
@given(verdicts, st.integers(0, 2**40))
def test_any_pipeline_verdict_encodes_to_a_valid_message(verdict, msg_seq):
    TRIED["encoder"] += 1
    try:
        msg = VerdictMsg.from_verdict(verdict, "line1", str(uuid.uuid4()), msg_seq)
    except ProtocolError:
        return  # refused in the publisher's caller with a reason, never sent malformed
    assert VerdictMsg.from_frames(msg.to_frames()) == msg


class _RecordingTarget:
    def __init__(self):
        self.calls = 0

    def status(self):
        self.calls += 1
        return {"state": "running"}

    def trigger(self, part_id):
        self.calls += 1

    def set_threshold(self, image, pixel):
        self.calls += 1

    def reload(self, model_dir):
        self.calls += 1


@pytest.fixture(scope="module")
def handler():
    # handle() is the whole request path minus the socket; no thread needed.
    return ControlServer(ControlSettings(bind="tcp://127.0.0.1:*"), SecuritySettings(curve="off"), _RecordingTarget())


control_objects = st.dictionaries(
    st.sampled_from(["cmd", "id", "part_id", "image", "pixel", "since_seq", "n", "model_dir"]) | st.text(max_size=8),
    json_values,
    max_size=4,
) | st.builds(
    lambda cmd, extra: {"cmd": cmd, **extra},
    st.sampled_from(list(CONTROL_COMMANDS)),
    st.dictionaries(st.sampled_from(["part_id", "image", "pixel", "since_seq", "n", "model_dir", "id"]), json_values,
                    max_size=3),
)


def _handle(server: ControlServer, raw: bytes) -> None:
    TRIED["control"] += 1
    before = server.target.calls
    reply = ControlReply.from_frames([server.handle(raw)])  # never raises, always one valid reply
    assert reply.ok or (reply.error and server.target.calls == before)  # refused requests change nothing
    assert "internal error" not in (reply.error or "")  # every refusal is a deliberate one
    if reply.ok:
        assert server.target.calls == before + (reply.cmd not in ("ping", "last"))


def _run_control(server, raw_or_obj) -> None:
    raw = raw_or_obj if isinstance(raw_or_obj, bytes) else json.dumps(raw_or_obj).encode()
    _handle(server, raw)


@FAST
@given(st.binary(max_size=128) | control_objects)
def test_control_handler_never_crashes(handler, request_input):
    _run_control(handler, request_input)


@pytest.mark.slow
@SLOW
@given(st.one_of(st.lists(st.binary(max_size=64), max_size=4),
                 st.tuples(st.sampled_from(list(VALID_BODY)), json_values)))
def test_decoders_long_run(item):
    if isinstance(item, tuple):
        body = dict(VALID_BODY)
        body[item[0]] = item[1]
        item = [VALID[0], json.dumps(body).encode()]
    _decode_or_refuse(item)


@pytest.mark.slow
@SLOW
@given(st.binary(max_size=256) | control_objects)
def test_control_handler_long_run(handler, request_input):
    _run_control(handler, request_input)


@pytest.fixture(scope="module", autouse=True)
def _report_inputs_tried():
    yield
    report(f"[fuzz] inputs tried: decoder {TRIED['decoder']}, encoder {TRIED['encoder']}, control {TRIED['control']}")

"""The heartbeat message: liveness and status at a fixed interval, on the PUB socket.

    frame 0  topic   b"heartbeat.<line_id>.<camera_id>"
    frame 1  body    UTF-8 JSON object, schema "edge-inspect/heartbeat", version 1 (fields: HeartbeatMsg)
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, PlainValidator, Strict, ValidationError, with_config
from pydantic.dataclasses import dataclass
from typing_extensions import NotRequired, TypedDict

from ...errors import ProtocolError
from .common import (
    HEARTBEAT_PREFIX,
    HEARTBEAT_SCHEMA,
    MAX_BODY_BYTES,
    VERSION,
    Count,
    Fraction,
    Id,
    NonNegative,
    Number,
    Text,
    Time,
    Uuid,
    Version,
    WireModel,
    adapter,
    check_topic_matches,
    decode_json_object,
    dumps_json,
    error_line,
    parse_topic,
    schema_name,
)

DriftState = Literal["off", "unavailable", "warming_up", "ok", "drift"]  # health.drift.STATES
DRIFT_STATES: tuple[str, ...] = get_args(DriftState)
HeartbeatSchemaName = schema_name(HEARTBEAT_SCHEMA)


@with_config(ConfigDict(extra="allow"))
class Drift(TypedDict):
    """status.drift (the drift watch, optional): numbers null until known; fractions lie in [0, 1]."""

    state: DriftState
    n: NotRequired[Count]
    window: NotRequired[Count]
    estimated_frr: NotRequired[Fraction | None]
    target_frr: NotRequired[Fraction | None]
    alert_frr: NotRequired[Fraction | None]
    ng_share: NotRequired[Fraction | None]
    median: NotRequired[Number | None]
    calibration_median: NotRequired[Number | None]
    shift_sigma: NotRequired[Number | None]
    spread_ratio: NotRequired[Number | None]
    threshold: NotRequired[Number | None]


@with_config(ConfigDict(extra="allow"))
class Status(TypedDict, total=False):
    """The pipeline's view: the summary figures have fixed types when present; other keys are free."""

    state: Text
    backend: Text
    fps: NonNegative
    drops: Count
    errors: Count
    publish_errors: Count
    drift: Drift


@with_config(ConfigDict(extra="allow"))
class PublisherCounts(TypedDict, total=False):
    """The publisher's view: verdict messages handed to ZeroMQ, and dropped (queue full); others free."""

    published: Count
    dropped: Count


def check_status(status: Any) -> dict:
    """Validate a heartbeat's ``status`` object (see Status); return it unchanged. Raises ProtocolError
    naming the field."""
    return _check(Status, status, "body.status")


def _check_publisher(counts: Any) -> dict:
    return _check(PublisherCounts, counts, "body.publisher")


def _check(kind: type, value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object")
    try:
        adapter(kind).validate_python(value)
    except ValidationError as exc:
        raise ProtocolError(error_line(exc, where)) from None
    return value  # as given: free keys and their values stay as they are


@dataclass
class HeartbeatMsg(WireModel):
    """Liveness and status at a fixed interval. ``last_msg_seq`` is the last verdict message sent this boot
    (-1 before the first), so a subscriber sees a lost tail message without waiting for the next verdict."""

    schema: HeartbeatSchemaName = field(default=HEARTBEAT_SCHEMA, kw_only=True)
    version: Version = field(default=VERSION, kw_only=True)
    line_id: Id
    camera_id: Id
    boot_id: Uuid
    time: Time
    uptime_s: NonNegative
    interval_s: NonNegative
    last_msg_seq: Annotated[int, Strict(), Field(ge=-1)]
    # state, fps, drops, errors, backend, drift, ... (the pipeline's view)
    status: Annotated[dict, PlainValidator(check_status, json_schema_input_type=Status)] = field(
        default_factory=dict)
    # published, dropped (queue full), ... (the publisher's view)
    publisher: Annotated[dict, PlainValidator(_check_publisher, json_schema_input_type=PublisherCounts)] = (
        field(default_factory=dict))

    @property
    def topic(self) -> str:
        return f"{HEARTBEAT_PREFIX}.{self.line_id}.{self.camera_id}"

    def body(self) -> dict:
        """The JSON body (frame 1), checked again: fields may have been changed since construction."""
        body = self.dump()
        type(self).validate_body(body)
        return body

    def to_frames(self) -> list[bytes]:
        return [self.topic.encode("ascii"), dumps_json(self.body())]

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> HeartbeatMsg:
        line_id, camera_id = parse_topic(frames, HEARTBEAT_PREFIX)
        if len(frames) != 2:
            raise ProtocolError(f"message: expected 2 frames (topic, body), got {len(frames)}")
        msg = cls.validate_body(decode_json_object(frames[1], "body", MAX_BODY_BYTES))
        check_topic_matches(line_id, camera_id, msg.line_id, msg.camera_id)
        return msg

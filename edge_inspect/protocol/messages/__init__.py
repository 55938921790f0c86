"""Wire format of every message edge-inspect sends over ZeroMQ: one pydantic model per message, which owns
its frames (``to_frames`` / ``from_frames``) and its JSON Schema (docs/schemas/, from ``schemas.py``).

    verdict.py    VerdictMsg     PUB  [b"verdict.<line>.<camera>", JSON body, heat map?]
    heartbeat.py  HeartbeatMsg   PUB  [b"heartbeat.<line>.<camera>", JSON body]
    control.py    ControlRequest / ControlReply (ROUTER, one JSON frame each); LastResult
    common.py     topics, limits, time stamps, JSON framing, field types, one-line errors

Decoders are strict about what they read (types, ranges, formats, sizes; no NaN/Infinity) and raise
ProtocolError with one line naming the field; unknown extra body fields are ignored so a version can grow
additively (a control request's unknown arguments are refused). docs/protocol.md is the reader's
reference; keep it in step with these files.
"""

from .common import (
    HEARTBEAT_PREFIX,
    HEARTBEAT_SCHEMA,
    ID_PATTERN,
    MAX_BODY_BYTES,
    MAX_CONTROL_BYTES,
    MAX_HEATMAP_SIDE,
    MAX_REGIONS,
    MAX_TEXT,
    VERDICT_PREFIX,
    VERDICT_SCHEMA,
    VERSION,
    check_id,
    decode_json_object,
    dumps_json,
    format_time,
    parse_time,
)
from .control import CONTROL_COMMANDS, ControlReply, ControlRequest, LastResult, request_id
from .heartbeat import DRIFT_STATES, HeartbeatMsg, check_status
from .verdict import RESULT_STATES, VerdictMsg, quantise_heatmap

__all__ = [
    "CONTROL_COMMANDS",
    "DRIFT_STATES",
    "HEARTBEAT_PREFIX",
    "HEARTBEAT_SCHEMA",
    "ID_PATTERN",
    "MAX_BODY_BYTES",
    "MAX_CONTROL_BYTES",
    "MAX_HEATMAP_SIDE",
    "MAX_REGIONS",
    "MAX_TEXT",
    "RESULT_STATES",
    "VERDICT_PREFIX",
    "VERDICT_SCHEMA",
    "VERSION",
    "ControlReply",
    "ControlRequest",
    "HeartbeatMsg",
    "LastResult",
    "VerdictMsg",
    "check_id",
    "check_status",
    "decode_json_object",
    "dumps_json",
    "format_time",
    "parse_time",
    "quantise_heatmap",
    "request_id",
]

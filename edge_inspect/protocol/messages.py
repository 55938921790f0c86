"""Wire format of every message edge-inspect sends over ZeroMQ; each type owns its encoding.

Verdict (PUB, multipart)::

    frame 0  topic   b"verdict.<line_id>.<camera_id>"
    frame 1  body    UTF-8 JSON object, schema "edge-inspect/verdict", version 1 (fields: VerdictMsg)
    frame 2  heatmap optional; raw bytes, C order, described by body["heatmap"] =
                     {"encoding": "raw", "dtype": "uint8", "shape": [h, w]}; value/255 = map in [0, 1]

Heartbeat (PUB): [b"heartbeat.<line_id>.<camera_id>", JSON body, schema "edge-inspect/heartbeat"].
Control (ROUTER): one JSON frame per request ({"cmd": ...}) and per reply ({"ok": ...}).

Decoders are strict about what they read (types, ranges, formats) and raise ProtocolError with one
line naming the field; unknown extra body fields are ignored so a version can grow additively.
docs/protocol.md is the reader's reference; keep it in step with this file.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..verdict import Region, Verdict

VERDICT_SCHEMA = "edge-inspect/verdict"
HEARTBEAT_SCHEMA = "edge-inspect/heartbeat"
VERSION = 1

VERDICT_PREFIX = "verdict"
HEARTBEAT_PREFIX = "heartbeat"
RESULT_STATES = ("ok", "ng", "unknown")

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no dots: topics are dot-separated prefixes
_TIME_PATTERN = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.\d{3}Z$")
MAX_BODY_BYTES = 1 << 20
MAX_HEATMAP_SIDE = 8192
MAX_REGIONS = 10_000
MAX_TEXT = 4096
MAX_CONTROL_BYTES = 64 * 1024


# ---------------------------------------------------------------------------------------------------------
# small validators: each raises ProtocolError naming the field


def _fail(what: str, why: str) -> ProtocolError:
    return ProtocolError(f"{what}: {why}")


def _get(d: dict, key: str, where: str) -> Any:
    """Every field is required; nullable ones must be present as null (so a typo is not read as 'absent')."""
    if key not in d:
        raise _fail(f"{where}.{key}", "missing")
    return d[key]


def _int(d: dict, key: str, lo: int | None = None, hi: int | None = None, where: str = "body") -> int:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(f"{where}.{key}", f"expected an integer, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise _fail(f"{where}.{key}", f"{v} out of range (must be {bounds})")
    return v


def _num(d: dict, key: str, lo: float | None = None, nullable: bool = False, where: str = "body") -> float | None:
    v = _get(d, key, where)
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(f"{where}.{key}", f"expected a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise _fail(f"{where}.{key}", "not finite")
    if lo is not None and v < lo:
        raise _fail(f"{where}.{key}", f"{v} is below {lo}")
    return v


def _str(d: dict, key: str, nullable: bool = False, pattern: re.Pattern | None = None, where: str = "body") -> str | None:
    v = _get(d, key, where)
    if v is None and nullable:
        return None
    if not isinstance(v, str):
        raise _fail(f"{where}.{key}", f"expected a string, got {type(v).__name__}")
    if len(v) > MAX_TEXT:
        raise _fail(f"{where}.{key}", f"longer than {MAX_TEXT} characters")
    if pattern is not None and not pattern.match(v):
        raise _fail(f"{where}.{key}", f"{v[:80]!r} does not match {pattern.pattern}")
    return v


def _uuid(d: dict, key: str, where: str = "body") -> str:
    v = _str(d, key, where=where)
    try:
        return str(uuid.UUID(v))
    except ValueError:
        raise _fail(f"{where}.{key}", f"{v[:80]!r} is not a UUID") from None


def _time(d: dict, key: str, where: str = "body") -> str:
    v = _str(d, key, where=where)
    m = _TIME_PATTERN.match(v)
    if not m:
        raise _fail(f"{where}.{key}", f"{v[:80]!r} is not UTC ISO 8601 with ms (YYYY-MM-DDThh:mm:ss.sssZ)")
    try:
        datetime(*(int(g) for g in m.groups()))  # range check (month 13, Feb 30, ...); strptime is 10x slower
    except ValueError as exc:
        raise _fail(f"{where}.{key}", f"{v!r}: {exc}") from None
    return v


def _schema(d: dict, expected: str) -> None:
    schema = d.get("schema")
    if schema != expected:
        raise _fail("body.schema", f"expected {expected!r}, got {str(schema)[:80]!r}")
    version = _int(d, "version", lo=1)
    if version != VERSION:
        raise _fail("body.version", f"version {version} is not readable by this reader (reads {VERSION})")


def decode_json_object(raw: Any, what: str, limit: int) -> dict:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise _fail(what, f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > limit:
        raise _fail(what, f"{len(raw)} bytes exceeds the {limit}-byte limit")
    try:
        # NaN/Infinity are not JSON; refuse them instead of letting Python's extension through.
        obj = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(what, f"not valid UTF-8 JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise _fail(what, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def dumps_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _topic(frames: Any, prefix: str) -> tuple[str, str]:
    """Check frame 0 is b"<prefix>.<line>.<camera>"; return (line_id, camera_id)."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ProtocolError("message: expected a non-empty list of frames")
    raw = frames[0]
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise _fail("topic", f"expected bytes, got {type(raw).__name__}")
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise _fail("topic", "not ASCII") from None
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != prefix or not all(ID_PATTERN.match(p) for p in parts[1:]):
        raise _fail("topic", f"{text[:80]!r} is not '{prefix}.<line_id>.<camera_id>'")
    return parts[1], parts[2]


def format_time(epoch_s: float) -> str:
    """Epoch seconds (UTC) -> 'YYYY-MM-DDThh:mm:ss.sssZ'."""
    ms_total = int(round(epoch_s * 1000))
    t = time.gmtime(ms_total // 1000)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{ms_total % 1000:03d}Z")


def parse_time(text: str) -> float:
    """'YYYY-MM-DDThh:mm:ss.sssZ' -> epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def check_id(value: str, what: str) -> str:
    """A line or camera id usable in a topic: 1-64 of [A-Za-z0-9_-]. Raises ProtocolError."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise _fail(what, f"{str(value)[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ - (it is part of the topic)")
    return value


# ---------------------------------------------------------------------------------------------------------
# verdict


def quantise_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """(h, w) float map in [0, 1] -> (h, w) uint8 (value * 255, rounded, clipped); uint8 passes through."""
    a = np.asarray(heatmap)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or not 0 < a.shape[0] <= MAX_HEATMAP_SIDE or not 0 < a.shape[1] <= MAX_HEATMAP_SIDE:
        raise ProtocolError(f"heatmap: expected (h, w) with sides 1..{MAX_HEATMAP_SIDE}, got shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))


@dataclass
class VerdictMsg:
    """One verdict on the wire. ``seq`` is the camera's frame number (gaps = frames the station skipped);
    ``msg_seq`` counts this publisher's verdict messages from 0 per boot (gaps = messages lost in transit)."""

    line_id: str
    camera_id: str
    seq: int
    msg_seq: int
    boot_id: str
    capture_time: str  # UTC ISO 8601 with ms
    decision_time: str
    result_state: str  # ok | ng | unknown
    score: float | None
    normalised_score: float | None
    threshold: float
    regions: list[Region] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    model_version: str = ""
    part_id: str | None = None
    error: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (h, w) uint8, value/255 in [0, 1]

    @property
    def topic(self) -> str:
        return f"{VERDICT_PREFIX}.{self.line_id}.{self.camera_id}"

    @classmethod
    def from_verdict(cls, v: Verdict, line_id: str, boot_id: str, msg_seq: int, with_heatmap: bool = True) -> VerdictMsg:
        """Build the wire message; a non-finite score becomes an ``unknown`` verdict saying why (JSON has no NaN)."""
        state, score, norm, error = v.label, _finite_or_none(v.score), _finite_or_none(v.normalised_score), v.error
        if (v.score is not None and score is None) or (v.normalised_score is not None and norm is None):
            state, score, norm = "unknown", None, None
            error = f"non-finite score ({v.score!r}, normalised {v.normalised_score!r})" + (f"; {error}" if error else "")
        if not math.isfinite(float(v.threshold)):
            raise ProtocolError(f"verdict.threshold: {v.threshold!r} is not finite")
        msg = cls(
            line_id=check_id(line_id, "line_id"),
            camera_id=check_id(v.camera_id, "camera_id"),
            seq=int(v.seq),
            msg_seq=int(msg_seq),
            boot_id=boot_id,
            capture_time=format_time(v.t_capture_wall),
            decision_time=format_time(v.t_decision_wall),
            result_state=state,
            score=score,
            normalised_score=norm,
            threshold=float(v.threshold),
            regions=[
                Region(int(r.x), int(r.y), int(r.w), int(r.h), int(r.area), float(r.peak) if math.isfinite(r.peak) else 0.0)
                for r in v.regions
            ],
            latency_ms={str(k): round(max(0.0, float(t)), 3) for k, t in v.latency_ms.items() if math.isfinite(float(t))},
            model_id=str(v.model_id),
            model_version=str(v.model_version),
            part_id=v.part_id,
            error=error,
            heatmap=quantise_heatmap(v.heatmap) if (with_heatmap and v.heatmap is not None) else None,
        )
        _validate_verdict_body(msg.body())  # fail here, in the caller, on anything the decoder would refuse
        return msg

    def body(self) -> dict:
        body = {
            "schema": VERDICT_SCHEMA,
            "version": VERSION,
            "line_id": self.line_id,
            "camera_id": self.camera_id,
            "part_id": self.part_id,
            "seq": self.seq,
            "msg_seq": self.msg_seq,
            "boot_id": self.boot_id,
            "capture_time": self.capture_time,
            "decision_time": self.decision_time,
            "result_state": self.result_state,
            "score": self.score,
            "normalised_score": self.normalised_score,
            "threshold": self.threshold,
            "regions": [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "area": r.area, "peak": r.peak} for r in self.regions],
            "model_id": self.model_id,
            "model_version": self.model_version,
            "latency_ms": dict(self.latency_ms),
            "error": self.error,
            "heatmap": None,
        }
        if self.heatmap is not None:
            body["heatmap"] = {"encoding": "raw", "dtype": "uint8", "shape": list(self.heatmap.shape)}
        return body

    def to_frames(self, validate: bool = True) -> list[bytes]:
        """Encode; ``validate=False`` skips the schema check for messages already checked (from_verdict)."""
        body = self.body()
        if validate:
            _validate_verdict_body(body)
        frames = [self.topic.encode("ascii"), dumps_json(body)]
        if self.heatmap is not None:
            frames.append(self.heatmap.tobytes())
        return frames

    @classmethod
    def from_body(cls, body: dict, heatmap: np.ndarray | None = None) -> VerdictMsg:
        """Validate a decoded JSON body (e.g. from the control channel's ``last``) and build the message."""
        if not isinstance(body, dict):
            raise ProtocolError(f"body: expected a JSON object, got {type(body).__name__}")
        _validate_verdict_body(body)
        return cls(
            line_id=body["line_id"],
            camera_id=body["camera_id"],
            seq=body["seq"],
            msg_seq=body["msg_seq"],
            boot_id=body["boot_id"],
            capture_time=body["capture_time"],
            decision_time=body["decision_time"],
            result_state=body["result_state"],
            score=None if body["score"] is None else float(body["score"]),
            normalised_score=None if body["normalised_score"] is None else float(body["normalised_score"]),
            threshold=float(body["threshold"]),
            regions=[Region(r["x"], r["y"], r["w"], r["h"], r["area"], float(r["peak"])) for r in body["regions"]],
            latency_ms={k: float(t) for k, t in body["latency_ms"].items()},
            model_id=body["model_id"],
            model_version=body["model_version"],
            part_id=body["part_id"],
            error=body["error"],
            heatmap=heatmap,
        )

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> VerdictMsg:
        line_id, camera_id = _topic(frames, VERDICT_PREFIX)
        if len(frames) not in (2, 3):
            raise _fail("message", f"expected 2 or 3 frames (topic, body[, heatmap]), got {len(frames)}")
        body = decode_json_object(frames[1], "body", MAX_BODY_BYTES)
        _validate_verdict_body(body)
        if (body["line_id"], body["camera_id"]) != (line_id, camera_id):
            raise _fail("topic", f"names {line_id}.{camera_id} but the body says {body['line_id']}.{body['camera_id']}")
        header = body["heatmap"]
        if (header is None) != (len(frames) == 2):
            raise _fail("heatmap", "body.heatmap and the presence of frame 2 disagree")
        heatmap = None
        if header is not None:
            raw = frames[2]
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise _fail("heatmap", f"expected bytes, got {type(raw).__name__}")
            h, w = header["shape"]
            if len(raw) != h * w:
                raise _fail("heatmap", f"{len(raw)} bytes for shape {h}x{w} uint8 (expected {h * w})")
            heatmap = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(h, w)
        return cls.from_body(body, heatmap)


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _validate_verdict_body(b: dict) -> None:
    _schema(b, VERDICT_SCHEMA)
    _str(b, "line_id", pattern=ID_PATTERN)
    _str(b, "camera_id", pattern=ID_PATTERN)
    _str(b, "part_id", nullable=True)
    _int(b, "seq", lo=0)
    _int(b, "msg_seq", lo=0)
    _uuid(b, "boot_id")
    _time(b, "capture_time")
    _time(b, "decision_time")
    state = b.get("result_state")
    if state not in RESULT_STATES:
        raise _fail("body.result_state", f"{str(state)[:40]!r} is not one of {', '.join(RESULT_STATES)}")
    score = _num(b, "score", nullable=True)
    _num(b, "normalised_score", nullable=True)
    if state != "unknown" and score is None:
        raise _fail("body.score", f"null but result_state is {state!r} (only 'unknown' may lack a score)")
    _num(b, "threshold")
    regions = _get(b, "regions", "body")
    if not isinstance(regions, list) or len(regions) > MAX_REGIONS:
        raise _fail("body.regions", f"expected a list of at most {MAX_REGIONS} regions")
    for i, r in enumerate(regions):
        if not isinstance(r, dict):
            raise _fail(f"body.regions[{i}]", "expected an object")
        for k in ("x", "y", "w", "h", "area"):
            _int(r, k, lo=0, where=f"body.regions[{i}]")
        _num(r, "peak", where=f"body.regions[{i}]")
    _str(b, "model_id")
    _str(b, "model_version")
    lat = _get(b, "latency_ms", "body")
    if not isinstance(lat, dict) or len(lat) > 64:
        raise _fail("body.latency_ms", "expected an object of at most 64 stages")
    for k in lat:
        if len(k) > 64:
            raise _fail("body.latency_ms", f"stage name {k[:80]!r} longer than 64 characters")
        _num(lat, k, lo=0.0, where="body.latency_ms")
    _str(b, "error", nullable=True)
    hm = _get(b, "heatmap", "body")
    if hm is not None:
        if not isinstance(hm, dict) or hm.get("encoding") != "raw" or hm.get("dtype") != "uint8":
            raise _fail("body.heatmap", 'expected null or {"encoding": "raw", "dtype": "uint8", "shape": [h, w]}')
        shape = hm.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_HEATMAP_SIDE for s in shape)
        ):
            raise _fail("body.heatmap.shape", f"expected [h, w] with sides 1..{MAX_HEATMAP_SIDE}")


# ---------------------------------------------------------------------------------------------------------
# heartbeat

_STATUS_TYPES = {"state": str, "backend": str, "fps": float, "drops": int, "errors": int, "publish_errors": int}
DRIFT_STATES = ("off", "unavailable", "warming_up", "ok", "drift")  # health.drift.STATES
# status.drift (the drift watch, optional): numbers null until known. Fractions lie in [0, 1].
_DRIFT_INTS = ("n", "window")
_DRIFT_FRACTIONS = ("estimated_frr", "target_frr", "alert_frr", "ng_share")
_DRIFT_NUMBERS = ("median", "calibration_median", "shift_sigma", "spread_ratio", "threshold")


@dataclass
class HeartbeatMsg:
    """Liveness and status at a fixed interval. ``last_msg_seq`` is the last verdict message sent this boot
    (-1 before the first), so a subscriber sees a lost tail message without waiting for the next verdict."""

    line_id: str
    camera_id: str
    boot_id: str
    time: str
    uptime_s: float
    interval_s: float
    last_msg_seq: int
    status: dict = field(default_factory=dict)  # state, fps, drops, errors, backend, ... (pipeline's view)
    publisher: dict = field(default_factory=dict)  # published, dropped (queue full) (publisher's view)

    @property
    def topic(self) -> str:
        return f"{HEARTBEAT_PREFIX}.{self.line_id}.{self.camera_id}"

    def body(self) -> dict:
        body = {
            "schema": HEARTBEAT_SCHEMA,
            "version": VERSION,
            "line_id": self.line_id,
            "camera_id": self.camera_id,
            "boot_id": self.boot_id,
            "time": self.time,
            "uptime_s": self.uptime_s,
            "interval_s": self.interval_s,
            "last_msg_seq": self.last_msg_seq,
            "status": self.status,
            "publisher": self.publisher,
        }
        _validate_heartbeat_body(body)
        return body

    def to_frames(self) -> list[bytes]:
        return [self.topic.encode("ascii"), dumps_json(self.body())]

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> HeartbeatMsg:
        line_id, camera_id = _topic(frames, HEARTBEAT_PREFIX)
        if len(frames) != 2:
            raise _fail("message", f"expected 2 frames (topic, body), got {len(frames)}")
        b = decode_json_object(frames[1], "body", MAX_BODY_BYTES)
        _validate_heartbeat_body(b)
        if (b["line_id"], b["camera_id"]) != (line_id, camera_id):
            raise _fail("topic", f"names {line_id}.{camera_id} but the body says {b['line_id']}.{b['camera_id']}")
        return cls(
            line_id=line_id,
            camera_id=camera_id,
            boot_id=b["boot_id"],
            time=b["time"],
            uptime_s=float(b["uptime_s"]),
            interval_s=float(b["interval_s"]),
            last_msg_seq=b["last_msg_seq"],
            status=b["status"],
            publisher=b["publisher"],
        )


def _validate_heartbeat_body(b: dict) -> None:
    _schema(b, HEARTBEAT_SCHEMA)
    _str(b, "line_id", pattern=ID_PATTERN)
    _str(b, "camera_id", pattern=ID_PATTERN)
    _uuid(b, "boot_id")
    _time(b, "time")
    _num(b, "uptime_s", lo=0.0)
    _num(b, "interval_s", lo=0.0)
    _int(b, "last_msg_seq", lo=-1)
    for section in ("status", "publisher"):
        if not isinstance(b.get(section), dict):
            raise _fail(f"body.{section}", "expected an object")
    check_status(b["status"])
    for key in ("published", "dropped"):
        if key in b["publisher"]:
            _int(b["publisher"], key, lo=0, where="body.publisher")


def check_status(status: Any) -> dict:
    """Validate a heartbeat's ``status`` object: the summary figures' types (``_STATUS_TYPES``) and, when
    present, the ``drift`` block; other keys are free. Raises ProtocolError naming the field."""
    if not isinstance(status, dict):
        raise _fail("body.status", "expected an object")
    for key, typ in _STATUS_TYPES.items():
        if key not in status:
            continue
        if typ is str:
            _str(status, key, where="body.status")
        elif typ is int:
            _int(status, key, lo=0, where="body.status")
        else:
            _num(status, key, lo=0.0, where="body.status")
    if "drift" in status:
        _check_drift(status["drift"])
    return status


def _check_drift(d: Any) -> None:
    where = "body.status.drift"
    if not isinstance(d, dict):
        raise _fail(where, "expected an object")
    state = _str(d, "state", where=where)
    if state not in DRIFT_STATES:
        raise _fail(f"{where}.state", f"{state[:40]!r} is not one of {', '.join(DRIFT_STATES)}")
    for key in _DRIFT_INTS:
        if key in d:
            _int(d, key, lo=0, where=where)
    for key in _DRIFT_FRACTIONS:
        v = _num(d, key, lo=0.0, nullable=True, where=where) if key in d else None
        if v is not None and v > 1.0:
            raise _fail(f"{where}.{key}", f"{v} is above 1 (a fraction)")
    for key in _DRIFT_NUMBERS:
        if key in d:
            _num(d, key, nullable=True, where=where)


# ---------------------------------------------------------------------------------------------------------
# control channel


def _opt_num(args: dict, key: str, where: str) -> float | None:
    """An optional finite number. Its range is not checked here: a threshold's lower bound belongs to the
    model in force (fused z-scores may be negative), so the pipeline checks it (decision.Thresholds)."""
    if args.get(key) is None:
        return None
    return _num(args, key, where=where)


def _text_arg(args: dict, key: str, where: str, max_len: int) -> str:
    v = _str(args, key, where=where)
    if not v or len(v) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise _fail(f"{where}.{key}", f"expected 1-{max_len} printable characters")
    return v


def _args_none(args: dict, where: str) -> dict:
    return {}


def _args_trigger(args: dict, where: str) -> dict:
    return {"part_id": _text_arg(args, "part_id", where, 128)}


def _args_set_threshold(args: dict, where: str) -> dict:
    image, pixel = _opt_num(args, "image", where), _opt_num(args, "pixel", where)
    if image is None and pixel is None:
        raise _fail(where, "give 'image' and/or 'pixel' (a finite number)")
    return {"image": image, "pixel": pixel}


def _args_last(args: dict, where: str) -> dict:
    since = None if args.get("since_seq") is None else _int(args, "since_seq", lo=-1, where=where)
    n = None if args.get("n") is None else _int(args, "n", lo=1, hi=1_000_000, where=where)
    return {"since_seq": since, "n": n}


def _args_reload(args: dict, where: str) -> dict:
    return {"model_dir": _text_arg(args, "model_dir", where, MAX_TEXT)}


# cmd -> (allowed argument names, validator returning the normalised arguments)
CONTROL_COMMANDS: dict[str, tuple[frozenset[str], Any]] = {
    "ping": (frozenset(), _args_none),
    "status": (frozenset(), _args_none),
    "trigger": (frozenset({"part_id"}), _args_trigger),
    "set_threshold": (frozenset({"image", "pixel"}), _args_set_threshold),
    "last": (frozenset({"since_seq", "n"}), _args_last),
    "reload": (frozenset({"model_dir"}), _args_reload),
}


@dataclass
class ControlRequest:
    """{"cmd": <name>, "id"?: <str|int, echoed in the reply>, ...arguments}. One JSON frame."""

    cmd: str
    args: dict = field(default_factory=dict)
    id: str | int | None = None

    def to_frames(self) -> list[bytes]:
        obj: dict[str, Any] = {"cmd": self.cmd, **{k: v for k, v in self.args.items() if v is not None}}
        if self.id is not None:
            obj["id"] = self.id
        return [dumps_json(obj)]

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> ControlRequest:
        if not isinstance(frames, (list, tuple)) or len(frames) != 1:
            raise ProtocolError("request: expected exactly one JSON frame")
        obj = decode_json_object(frames[0], "request", MAX_CONTROL_BYTES)
        req_id = request_id(obj)
        cmd = obj.get("cmd")
        if not isinstance(cmd, str):
            raise _fail("request.cmd", f"expected a string, got {type(cmd).__name__}")
        if cmd not in CONTROL_COMMANDS:
            raise _fail("request.cmd", f"unknown command {cmd[:40]!r}; known: {', '.join(CONTROL_COMMANDS)}")
        allowed, validate = CONTROL_COMMANDS[cmd]
        args = {k: v for k, v in obj.items() if k not in ("cmd", "id")}
        extra = sorted(set(args) - allowed)
        if extra:
            raise _fail(f"request.{cmd}", f"unknown argument(s) {', '.join(repr(e[:40]) for e in extra[:5])}")
        return cls(cmd=cmd, args=validate(args, f"request.{cmd}"), id=req_id)


def request_id(obj: Any) -> str | int | None:
    """The request's correlation id if it is a valid one (str of <= 64 chars or int), else None."""
    if not isinstance(obj, dict):
        return None
    v = obj.get("id")
    if isinstance(v, str) and len(v) <= 64:
        return v
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53:
        return v
    return None


@dataclass
class ControlReply:
    """{"ok": true, "cmd": ..., "id"?: ..., "result": {...}} or {"ok": false, "cmd"?: ..., "id"?: ..., "error": "..."}."""

    ok: bool
    cmd: str | None = None
    result: Any = None
    error: str | None = None
    id: str | int | None = None

    def to_frames(self) -> list[bytes]:
        obj: dict[str, Any] = {"ok": self.ok}
        if self.cmd is not None:
            obj["cmd"] = self.cmd
        if self.id is not None:
            obj["id"] = self.id
        if self.ok:
            obj["result"] = self.result
        else:
            obj["error"] = self.error or "error"
        return [dumps_json(obj)]

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> ControlReply:
        if not isinstance(frames, (list, tuple)) or len(frames) != 1:
            raise ProtocolError("reply: expected exactly one JSON frame")
        obj = decode_json_object(frames[0], "reply", 256 * MAX_BODY_BYTES)
        ok = obj.get("ok")
        if not isinstance(ok, bool):
            raise _fail("reply.ok", f"expected true or false, got {type(ok).__name__}")
        cmd = _str(obj, "cmd", nullable=True, where="reply") if "cmd" in obj else None
        if ok:
            return cls(ok=True, cmd=cmd, result=obj.get("result"), id=request_id(obj))
        return cls(ok=False, cmd=cmd, error=_str(obj, "error", where="reply"), id=request_id(obj))

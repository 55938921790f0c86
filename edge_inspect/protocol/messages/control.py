"""The control channel's messages (ROUTER socket): one JSON frame per request and one per reply.

Request: {"cmd": <name>, "id"?: <str of <= 64 chars | int, echoed in the reply>, ...that command's arguments}.
    One model per command (``CONTROL_COMMANDS``); an unknown argument is refused, an id that is not a
    valid one is ignored (the reply then carries none).
Reply: {"ok": true, "cmd": ..., "id"?: ..., "result": {...}}
    or {"ok": false, "cmd"?: ..., "id"?: ..., "error": "..."}.
    The result of ``last`` is a ``LastResult``: verdict bodies exactly as published (VerdictMsg).
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

from ...errors import ProtocolError
from .common import (
    MAX_CONTROL_BYTES,
    MAX_REPLY_BYTES,
    MAX_TEXT,
    Id,
    Number,
    Text,
    Uuid,
    WireModel,
    adapter,
    decode_json_object,
    dumps_json,
    error_line,
)
from .verdict import VerdictMsg

_ID_TEXT = Annotated[str, Strict(), Field(max_length=64)]
_ID_INT = Annotated[int, Strict(), Field(gt=-(2**53), lt=2**53)]


def _valid_id(v: Any) -> bool:
    if isinstance(v, str):
        return len(v) <= 64
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53


def request_id(obj: Any) -> str | int | None:
    """The request's correlation id if it is a valid one (str of <= 64 chars or int), else None."""
    v = obj.get("id") if isinstance(obj, dict) else None
    return v if _valid_id(v) else None


# An invalid id is not an error: it is ignored (so the error reply can still be matched by what is valid).
RequestId = Annotated[_ID_TEXT | _ID_INT | None, BeforeValidator(lambda v: v if _valid_id(v) else None)]


def printable(max_len: int) -> Any:
    """1..max_len characters, none of them a control character."""

    def check(v: str) -> str:
        if not v or len(v) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError(f"expected 1-{max_len} printable characters")
        return v

    schema = {"minLength": 1, "maxLength": max_len, "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}
    return Annotated[str, Strict(), AfterValidator(check), Field(json_schema_extra=schema)]


PartId = printable(128)
ModelDir = printable(MAX_TEXT)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RequestId = None


class _CameraRequest(_Request):
    """A command aimed at one camera of a station (``camera``: its id); optional with one camera."""

    camera: Id | None = None


class PingRequest(_Request):
    """Liveness; the reply carries the station's time and boot_id."""

    cmd: Literal["ping"]


class StatusRequest(_CameraRequest):
    """The pipeline's status (state, counters, thresholds, drift, ...)."""

    cmd: Literal["status"]


class TriggerRequest(_CameraRequest):
    """Judge the next frame as part ``part_id`` (triggered mode)."""

    cmd: Literal["trigger"]
    part_id: PartId


class SetThresholdRequest(_CameraRequest):
    """New image and/or pixel threshold. Any finite number passes the protocol: the range is the model's
    (fused z-scores may be negative), checked by the pipeline (decision.Thresholds)."""

    cmd: Literal["set_threshold"]
    image: Number | None = None
    pixel: Number | None = None

    @model_validator(mode="after")
    def _one_of_them(self) -> SetThresholdRequest:
        if self.image is None and self.pixel is None:
            raise ProtocolError("request.set_threshold: give 'image' and/or 'pixel' (a finite number)")
        return self


class LastRequest(_CameraRequest):
    """Stored verdicts: frame seq > since_seq, oldest first, at most n (no since_seq: the newest n)."""

    cmd: Literal["last"]
    since_seq: Annotated[int, Strict(), Field(ge=-1)] | None = None
    n: Annotated[int, Strict(), Field(ge=1, le=1000000)] | None = None


class ReloadRequest(_CameraRequest):
    """Load another model folder (on the station's disk) without a restart."""

    cmd: Literal["reload"]
    model_dir: ModelDir


RequestBody = Annotated[  # the wire object: one of these, told apart by "cmd" (and its JSON Schema)
    PingRequest | StatusRequest | TriggerRequest | SetThresholdRequest | LastRequest | ReloadRequest,
    Field(discriminator="cmd"),
]
# cmd -> the model of that request
CONTROL_COMMANDS: dict[str, type[_Request]] = {
    get_args(m.model_fields["cmd"].annotation)[0]: m for m in get_args(get_args(RequestBody)[0])
}


@dataclass
class ControlRequest(WireModel):
    """A decoded request: ``args`` holds every argument of the command (None where not given).
    ``to_frames`` does not validate: a client may send anything; the server judges (``from_frames``)."""

    _where = "request"
    _every_field_required = False

    cmd: str
    args: dict = field(default_factory=dict)
    id: RequestId = None

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
        try:
            req = adapter(RequestBody).validate_python(obj)
        except ValidationError as exc:
            raise ProtocolError(error_line(exc, "request")) from None
        args = req.model_dump(exclude={"cmd", "id"})
        if args.get("camera", "") is None:  # a one-camera request reads as before the camera argument came
            del args["camera"]
        return cls(cmd=req.cmd, args=args, id=req.id)


def _clip(v: Any) -> Any:
    """An error text is cut to MAX_TEXT characters (a long exception message must not break the reply)."""
    return v[: MAX_TEXT - 1] + "…" if isinstance(v, str) and len(v) > MAX_TEXT else v


@dataclass
class ControlReply(WireModel):
    """{"ok": true, "cmd": ..., "id"?: ..., "result": {...}}
    or {"ok": false, "cmd"?: ..., "id"?: ..., "error": "..."}."""

    _where = "reply"
    _every_field_required = False

    ok: Annotated[bool, Strict()]
    cmd: Text | None = None
    result: Any = None  # ok replies; for 'last' a LastResult
    error: Annotated[Text | None, BeforeValidator(_clip)] = None  # error replies: one line
    id: RequestId = None

    @model_validator(mode="after")
    def _error_says_why(self) -> ControlReply:
        if not self.ok and self.error is None:
            raise ProtocolError("reply.error: missing (an error reply says why)")
        return self

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
        obj = decode_json_object(frames[0], "reply", MAX_REPLY_BYTES)
        keep = ("ok", "cmd", "id", "result" if obj.get("ok") is True else "error")
        return cls.validate_body({k: obj[k] for k in keep if k in obj})


@dataclass
class LastResult(WireModel):
    """The result of ``last``: the station's boot and camera, and stored verdict bodies, oldest first."""

    _where = "result"

    boot_id: Uuid
    line_id: Id
    camera_id: Id
    verdicts: list[VerdictMsg]

    @classmethod
    def from_result(cls, result: Any) -> LastResult:
        return cls.validate_body(result)

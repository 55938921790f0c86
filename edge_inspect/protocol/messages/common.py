"""What every message shares: topics, limits, time stamps, JSON framing, field types, one-line errors.

Each message is a pydantic dataclass that mixes in ``WireModel``: validation, whether from the wire
(``validate_body``) or in Python (the constructor), raises ``ProtocolError`` with one line naming the
field (``body.regions[0].w: -3 out of range (must be >= 0)``), never a pydantic ``ValidationError``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ArgsKwargs

from ...errors import ProtocolError

VERDICT_SCHEMA = "edge-inspect/verdict"
HEARTBEAT_SCHEMA = "edge-inspect/heartbeat"
VERSION = 1

VERDICT_PREFIX = "verdict"
HEARTBEAT_PREFIX = "heartbeat"

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no dots: topics are dot-separated prefixes
TIME_PATTERN = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.\d{3}Z$")
MAX_BODY_BYTES = 1 << 20
MAX_HEATMAP_SIDE = 8192
MAX_REGIONS = 10_000
MAX_TEXT = 4096
MAX_STAGES = 64
MAX_CONTROL_BYTES = 64 * 1024
MAX_REPLY_BYTES = 256 * MAX_BODY_BYTES


# ---------------------------------------------------------------------------------------------------------
# field types (strict: no bool for a number, no "6.0" for a float, no NaN/Infinity)


def _check_time(v: str) -> str:
    m = TIME_PATTERN.match(v)
    if not m:
        raise ValueError(f"{v[:80]!r} is not UTC ISO 8601 with ms (YYYY-MM-DDThh:mm:ss.sssZ)")
    try:
        datetime(*(int(g) for g in m.groups()))  # range check (month 13, Feb 30, ...); strptime is 10x slower
    except ValueError as exc:
        raise ValueError(f"{v!r}: {exc}") from None
    return v


def _check_uuid(v: str) -> str:
    try:
        uuid.UUID(v)
    except ValueError:
        raise ValueError(f"{v[:80]!r} is not a UUID") from None
    return v


def _check_version(v: int) -> int:
    if v != VERSION:
        raise ValueError(f"version {v} is not readable by this reader (reads {VERSION})")
    return v


def schema_name(expected: str) -> Any:
    """The type of a body's "schema" field: exactly ``expected``."""

    def check(v: str) -> str:
        if v != expected:
            raise ValueError(f"expected {expected!r}, got {v[:80]!r}")
        return v

    const = WithJsonSchema({"const": expected, "type": "string"})
    return Annotated[str, Strict(), AfterValidator(check), const]


Version = Annotated[int, Strict(), AfterValidator(_check_version),
                    WithJsonSchema({"const": VERSION, "type": "integer"})]
Text = Annotated[str, Strict(), Field(max_length=MAX_TEXT)]
Id = Annotated[str, Strict(), Field(pattern=ID_PATTERN.pattern)]
Time = Annotated[Text, AfterValidator(_check_time),
                 Field(json_schema_extra={"format": "date-time", "pattern": TIME_PATTERN.pattern})]
Uuid = Annotated[Text, AfterValidator(_check_uuid), Field(json_schema_extra={"format": "uuid"})]
Count = Annotated[int, Strict(), Field(ge=0)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # any finite number (an int is fine)
NonNegative = Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]


# ---------------------------------------------------------------------------------------------------------
# errors: one line naming the field


def _path(where: str, loc: tuple) -> str:
    out = where
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _type_name(v: Any) -> str:
    return type(v).__name__


def _reason(err: dict) -> str:
    kind, v, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "missing"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"expected an integer, got {_type_name(v)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_type_name(v)}"
    if kind == "finite_number":
        return "not finite"
    if kind == "string_type":
        return f"expected a string, got {_type_name(v)}"
    if kind == "bool_type":
        return f"expected true or false, got {_type_name(v)}"
    if kind in ("dict_type", "model_type", "dataclass_type", "model_attributes_type"):
        return f"expected an object, got {_type_name(v)}"
    if kind == "list_type":
        return f"expected a list, got {_type_name(v)}"
    if kind == "string_too_long":
        return f"longer than {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"more than {ctx.get('max_length')} entries"
    if kind == "string_pattern_mismatch":
        return f"{str(v)[:80]!r} does not match {ctx.get('pattern')}"
    bounds = {"greater_than_equal": (">=", "ge"), "less_than_equal": ("<=", "le"),
              "greater_than": (">", "gt"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"{v} out of range (must be {op} {ctx.get(key)})"
    if kind == "literal_error":
        return f"{str(v)[:40]!r} is not one of {ctx.get('expected')}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def error_line(exc: ValidationError, where: str, names: tuple[str, ...] = ()) -> str:
    """The first error of ``exc`` as '<where>.<field>: <reason>'. ``names``: positional argument names, so a
    constructor error names the field instead of the argument's index. Unknown keys are listed together."""
    errors = exc.errors(include_url=False)
    extra = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        parent = extra[0][:-1]
        keys = [repr(str(loc[-1])[:40]) for loc in extra if loc[:-1] == parent]
        return f"{_path(where, parent)}: unknown argument(s) {', '.join(keys[:5])}"
    err = errors[0]
    loc = tuple(err["loc"])
    if loc and isinstance(loc[0], int) and names and loc[0] < len(names):
        loc = (names[loc[0]],) + loc[1:]
    reason = _reason(err)
    if loc and loc[-1] == "[key]":
        loc, reason = loc[:-1], f"key {reason}"
    if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
        tag_field = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        loc = loc + (tag_field,)
        if err["type"] == "union_tag_not_found":
            reason = "missing"
        elif not isinstance(tag := _get(err.get("input"), tag_field), str):
            reason = f"expected a string, got {_type_name(tag)}"
        else:
            known = ", ".join(t.strip("'") for t in str(err["ctx"].get("expected_tags", "")).split(", "))
            reason = f"unknown command {tag[:40]!r}; known: {known}"
    return f"{_path(where, loc)}: {reason}"


class WireModel:
    """Mixin for a message dataclass: every validation failure becomes one ProtocolError line.

    ``_where`` prefixes the field path ("body", "request", "reply"). With ``_every_field_required``, a
    JSON object must hold every field (nullable ones as null), so a misspelt key is not read as 'absent'.
    """

    _where: ClassVar[str] = "body"
    _every_field_required: ClassVar[bool] = True

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler):
        if isinstance(data, dict) and cls._every_field_required:
            for f in dataclasses.fields(cls):
                if f.name not in data:
                    raise ProtocolError(f"{cls._where}.{f.name}: missing")
        try:
            return handler(data)
        except ValidationError as exc:
            names = () if not isinstance(data, ArgsKwargs) else tuple(
                f.name for f in dataclasses.fields(cls) if f.init and not f.kw_only)
            raise ProtocolError(error_line(exc, cls._where, names)) from None

    @classmethod
    def validate_body(cls, body: Any, context: dict | None = None):
        """A decoded JSON object -> the message (ProtocolError naming the field if it is not one)."""
        if not isinstance(body, dict):
            raise ProtocolError(f"{cls._where}: expected a JSON object, got {type(body).__name__}")
        return adapter(cls).validate_python(body, context=context)

    def dump(self) -> dict:
        """The JSON object of this message (field order is the declaration order)."""
        return adapter(type(self)).dump_python(self)


_ADAPTERS: dict[type, TypeAdapter] = {}


def adapter(cls: Any) -> TypeAdapter:
    """One cached TypeAdapter per message type (building one compiles the validator)."""
    ta = _ADAPTERS.get(cls)
    if ta is None:
        ta = _ADAPTERS[cls] = TypeAdapter(cls)
    return ta


# ---------------------------------------------------------------------------------------------------------
# framing helpers


def decode_json_object(raw: Any, what: str, limit: int) -> dict:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}: expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > limit:
        raise ProtocolError(f"{what}: {len(raw)} bytes exceeds the {limit}-byte limit")
    try:
        # NaN/Infinity are not JSON; refuse them instead of letting Python's extension through.
        obj = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what}: not valid UTF-8 JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def dumps_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def parse_topic(frames: Any, prefix: str) -> tuple[str, str]:
    """Check frame 0 is b"<prefix>.<line>.<camera>"; return (line_id, camera_id)."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ProtocolError("message: expected a non-empty list of frames")
    raw = frames[0]
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"topic: expected bytes, got {type(raw).__name__}")
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("topic: not ASCII") from None
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != prefix or not all(ID_PATTERN.match(p) for p in parts[1:]):
        raise ProtocolError(f"topic: {text[:80]!r} is not '{prefix}.<line_id>.<camera_id>'")
    return parts[1], parts[2]


def check_topic_matches(line_id: str, camera_id: str, body_line: str, body_camera: str) -> None:
    if (body_line, body_camera) != (line_id, camera_id):
        raise ProtocolError(f"topic: names {line_id}.{camera_id} but the body says {body_line}.{body_camera}")


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
        raise ProtocolError(f"{what}: {str(value)[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ - "
                            "(it is part of the topic)")
    return value

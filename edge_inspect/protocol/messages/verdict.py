"""The verdict message: one per judged part, on the PUB socket.

    frame 0  topic   b"verdict.<line_id>.<camera_id>"
    frame 1  body    UTF-8 JSON object, schema "edge-inspect/verdict", version 1 (the fields of VerdictMsg)
    frame 2  heatmap optional; raw bytes, C order, described by body["heatmap"] =
                     {"encoding": "raw", "dtype": "uint8", "shape": [h, w]}; value/255 = map in [0, 1]

The same body (without frame 2) is what the control channel's ``last`` returns.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

from ...errors import ProtocolError
from ...verdict import Region, Verdict
from .common import (
    MAX_BODY_BYTES,
    MAX_HEATMAP_SIDE,
    MAX_REGIONS,
    MAX_STAGES,
    VERDICT_PREFIX,
    VERDICT_SCHEMA,
    VERSION,
    Count,
    Id,
    NonNegative,
    Number,
    Text,
    Time,
    Uuid,
    Version,
    WireModel,
    adapter,
    check_id,
    check_topic_matches,
    decode_json_object,
    dumps_json,
    error_line,
    format_time,
    parse_topic,
    schema_name,
)

ResultState = Literal["ok", "ng", "unknown"]
RESULT_STATES: tuple[str, ...] = get_args(ResultState)
VerdictSchemaName = schema_name(VERDICT_SCHEMA)
Side = Annotated[int, Strict(), Field(gt=0, le=MAX_HEATMAP_SIDE)]
StageName = Annotated[str, Strict(), Field(max_length=64)]


def doc(text: str) -> Any:
    """A field's description in the JSON Schema."""
    return Field(description=text)


class HeatmapHeader(TypedDict):
    """body["heatmap"]: how to read frame 2 (null when there is no frame 2)."""

    encoding: Literal["raw"]
    dtype: Literal["uint8"]
    shape: Annotated[list[Side], Field(min_length=2, max_length=2)]  # [h, w]


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


def _heatmap_in(value: Any, info: ValidationInfo) -> np.ndarray | None:
    """In Python: a (h, w) uint8 array or None. From the wire: the header, and the array from frame 2
    (context "frame"); a body alone (context without "frame", e.g. from ``last``) yields no array."""
    ctx = info.context or {}
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 2:
            raise ProtocolError(f"heatmap: expected a (h, w) uint8 array, got {value.dtype} {value.shape}")
        return quantise_heatmap(value)  # checks the sides
    header = None
    if value is not None:
        try:
            header = adapter(HeatmapHeader).validate_python(value)
        except ValidationError as exc:
            raise ProtocolError(error_line(exc, "body.heatmap")) from None
    if "frame" not in ctx:
        given = ctx.get("heatmap")
        return None if given is None else _heatmap_in(given, info)
    frame = ctx["frame"]
    if (header is None) != (frame is None):
        raise ProtocolError("heatmap: body.heatmap and the presence of frame 2 disagree")
    if header is None:
        return None
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"heatmap: expected bytes, got {type(frame).__name__}")
    h, w = header["shape"]
    if len(frame) != h * w:
        raise ProtocolError(f"heatmap: {len(frame)} bytes for shape {h}x{w} uint8 (expected {h * w})")
    return np.frombuffer(bytes(frame), dtype=np.uint8).reshape(h, w)


def _heatmap_out(value: np.ndarray | None) -> dict | None:
    if value is None:
        return None
    return {"encoding": "raw", "dtype": "uint8", "shape": [int(s) for s in value.shape]}


Heatmap = Annotated[
    np.ndarray | None,
    PlainValidator(_heatmap_in, json_schema_input_type=HeatmapHeader | None),
    PlainSerializer(_heatmap_out, return_type=HeatmapHeader | None),
]


@dataclass(kw_only=True, config=ConfigDict(
    arbitrary_types_allowed=True,  # the heat map's numpy array
    revalidate_instances="always",  # Region objects given in Python are checked too, not trusted
))
class VerdictMsg(WireModel):
    """One verdict on the wire. ``seq`` is the camera's frame number (gaps = frames the station skipped);
    ``msg_seq`` counts this publisher's verdict messages from 0 per boot (gaps = messages lost in transit).

    Every field is required in the JSON body (nullable ones present as null); unknown extra fields are
    ignored so a version can grow additively. The field order is the body's key order."""

    schema: VerdictSchemaName = field(default=VERDICT_SCHEMA)
    version: Version = field(default=VERSION)
    line_id: Annotated[Id, doc("Production line; also in the topic.")]
    camera_id: Annotated[Id, doc("Camera; also in the topic.")]
    part_id: Annotated[Text | None, doc("The part id given with the control command trigger, else null.")]
    seq: Annotated[Count, doc(
        "The camera's frame number. A jump with contiguous msg_seq: frames the station skipped on purpose.")]
    msg_seq: Annotated[Count, doc(
        "This publisher's message number, from 0 per boot. A jump: verdicts lost on the way; fetch them "
        "with the control command last.")]
    boot_id: Annotated[Uuid, doc("New on every start of the station: a new one is a restart, not a gap.")]
    capture_time: Annotated[Time, doc("UTC, ISO 8601 with milliseconds.")]
    decision_time: Annotated[Time, doc("UTC, ISO 8601 with milliseconds.")]
    result_state: Annotated[ResultState, doc(
        "unknown: no decision (backend error, bad image, ...); see error.")]
    score: Annotated[Number | None, doc(
        "The image score the rule compares with threshold (ng when score > threshold). Edge profile: a "
        "fused z-score, z(max of the anomaly map) + z(image-level Gaussian distance), each standardised on "
        "held-out good images, so it may be negative. Paper profile: the anomaly map's maximum. Null only "
        "when result_state is unknown.")]
    normalised_score: Annotated[Number | None, doc(
        "clip((score - threshold) / (norm_max - norm_min) + 0.5, 0, 1) with the model's calibration: 0.5 at "
        "the threshold, within [0, 1]. Null when result_state is unknown.")]
    threshold: Annotated[Number, doc(
        "The image threshold in force for this decision (set_threshold changes it), in score units.")]
    regions: Annotated[list[Region], Field(max_length=MAX_REGIONS), doc(
        "Defect regions (ng only) in original-image pixels, highest peak first.")]
    model_id: Annotated[Text, doc("The model folder's manifest identity.")]
    model_version: Text
    latency_ms: Annotated[dict[StageName, NonNegative], Field(max_length=MAX_STAGES), doc(
        "Milliseconds per stage (capture_wait, preprocess, infer, decide, ...).")]
    error: Annotated[Text | None, doc("Why result_state is unknown, else null.")]
    heatmap: Annotated[Heatmap, doc("Describes frame 2; null when there is none.")] = field(
        default=None, repr=False)

    @model_validator(mode="after")
    def _score_unless_unknown(self) -> VerdictMsg:
        if self.score is None and self.result_state != "unknown":
            raise ProtocolError(f"body.score: null but result_state is {self.result_state!r} "
                                "(only 'unknown' may lack a score)")
        return self

    @property
    def topic(self) -> str:
        return f"{VERDICT_PREFIX}.{self.line_id}.{self.camera_id}"

    @classmethod
    def from_verdict(cls, v: Verdict, line_id: str, boot_id: str, msg_seq: int,
                     with_heatmap: bool = True) -> VerdictMsg:
        """The one conversion from the pipeline's Verdict. A non-finite score becomes an ``unknown`` verdict
        saying why (JSON has no NaN); anything else the wire refuses raises ProtocolError here, in the
        caller."""
        state, error = v.label, v.error
        score, norm = _finite_or_none(v.score), _finite_or_none(v.normalised_score)
        if (v.score is not None and score is None) or (v.normalised_score is not None and norm is None):
            state, score, norm = "unknown", None, None
            error = (f"non-finite score ({v.score!r}, normalised {v.normalised_score!r})"
                     + (f"; {error}" if error else ""))
        if not math.isfinite(float(v.threshold)):
            raise ProtocolError(f"verdict.threshold: {v.threshold!r} is not finite")
        return cls(
            line_id=check_id(line_id, "line_id"),
            camera_id=check_id(v.camera_id, "camera_id"),
            part_id=v.part_id,
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
                Region(int(r.x), int(r.y), int(r.w), int(r.h), int(r.area),
                       float(r.peak) if math.isfinite(r.peak) else 0.0)
                for r in v.regions
            ],
            model_id=str(v.model_id),
            model_version=str(v.model_version),
            latency_ms={str(k): round(max(0.0, float(t)), 3)
                        for k, t in v.latency_ms.items() if math.isfinite(float(t))},
            error=error,
            heatmap=quantise_heatmap(v.heatmap) if (with_heatmap and v.heatmap is not None) else None,
        )

    def body(self) -> dict:
        """The JSON body (frame 1)."""
        return self.dump()

    def to_frames(self, validate: bool = True) -> list[bytes]:
        """Encode; ``validate=False`` skips re-checking the body (the constructor checked it; use True after
        changing fields)."""
        body = self.body()
        if validate:
            type(self).validate_body(body)
        frames = [self.topic.encode("ascii"), dumps_json(body)]
        if self.heatmap is not None:
            frames.append(self.heatmap.tobytes())
        return frames

    @classmethod
    def from_body(cls, body: Any, heatmap: np.ndarray | None = None) -> VerdictMsg:
        """Validate a decoded JSON body (e.g. from the control channel's ``last``) and build the message."""
        return cls.validate_body(body, context={"heatmap": heatmap})

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> VerdictMsg:
        line_id, camera_id = parse_topic(frames, VERDICT_PREFIX)
        if len(frames) not in (2, 3):
            raise ProtocolError(
                f"message: expected 2 or 3 frames (topic, body[, heatmap]), got {len(frames)}")
        body = decode_json_object(frames[1], "body", MAX_BODY_BYTES)
        msg = cls.validate_body(body, context={"frame": frames[2] if len(frames) == 3 else None})
        check_topic_matches(line_id, camera_id, msg.line_id, msg.camera_id)
        return msg


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None

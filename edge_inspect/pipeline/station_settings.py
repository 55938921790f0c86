"""The station's settings: ``[[cameras]]`` (one table per camera) and ``[station]`` (the shared inference).

    [[cameras]]
    id = "top"                       # in topics and verdicts; default: derived from the URI, else cam<N>
    uri = "gige://192.168.10.20"
    mode = "trigger"                 # free-run | lossless | trigger | auto (default: [pipeline] mode)
    image_threshold = 0.62           # optional: this camera's calibrated threshold override
    model_dir = "/var/lib/edge-inspect/models/side"   # optional: default [model] dir
    infer_timeout_s = 0.5            # optional: this camera's verdict deadline (default pipeline.infer_timeout_s)

``mode = "trigger"`` is a software-triggered camera (camera.trigger = "software", unless the URI says
trigger=hardware) judged losslessly: every trigger gets exactly one verdict, or a counted "unknown" when
its inference misses the deadline. Everything else (camera timeouts, queues, publisher, drift, ...) comes
from the ordinary sections and applies to every camera.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_ID = r"^[A-Za-z0-9_-]{1,64}$"  # as protocol.messages.common.ID_PATTERN: the id is part of the topic


class CameraEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    id: str | None = Field(default=None, pattern=_ID)
    uri: str
    mode: Literal["auto", "free-run", "lossless", "trigger"] | None = None  # None: pipeline.mode
    model_dir: Path | None = None
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    infer_timeout_s: float | None = Field(default=None, gt=0)


class StationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    # Once one camera's frame is ready, how long the shared inference waits for the other cameras' frames
    # to run them as one batch (milliseconds; 0: never wait). A model used by one camera never waits.
    batch_wait_ms: float = Field(default=2.0, ge=0, le=100)
    # Most frames in one inference call. None (auto): 1 on ONNX Runtime (CPU: measured, batching saves
    # ~10-15 % per image but its activations cost ~+60 % memory with 4 cameras; benchmarks/multi_camera.py),
    # 8 on TensorRT (an accelerator, where batching is the point).
    max_batch: int | None = Field(default=None, ge=1, le=64)


def derive_camera_id(uri: str, index: int) -> str:
    """A camera id from its URI: a GigE / RTSP host, or a folder's or file's name; else ``cam<index>``."""
    from ..camera.uri import parse_uri

    try:
        parsed = parse_uri(uri)
    except Exception:  # noqa: BLE001 - the URI is checked (with a proper message) when the source is made
        return f"cam{index}"
    if parsed.scheme in ("gige", "rtsp"):
        from urllib.parse import urlsplit

        base = parsed.location if parsed.scheme == "gige" else (urlsplit(parsed.location).hostname or "")
    elif parsed.scheme in ("dir", "file"):
        base = Path(parsed.location.rstrip("/")).stem
    else:
        base = ""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")[:64]
    return base or f"cam{index}"


def camera_entries(cameras: list[CameraEntry]) -> list[tuple[str, CameraEntry]]:
    """(id, entry) per camera: the given id, else one derived from the URI; a derived id already taken
    gets ``-<index>`` appended. Given ids must be unique (ConfigError from the station otherwise)."""
    given = {c.id for c in cameras if c.id}
    out: list[tuple[str, CameraEntry]] = []
    taken: set[str] = set()
    for i, c in enumerate(cameras):
        cid = c.id
        if cid is None:
            cid = derive_camera_id(c.uri, i)
            if cid in taken or cid in given:
                cid = f"{cid[:60]}-{i}"
        taken.add(cid)
        out.append((cid, c))
    return out


def camera_settings(settings, camera_id: str, entry: CameraEntry):
    """This camera's Settings: the station's with its URI, id, mode, model folder, thresholds and deadline."""
    s = settings.model_copy(deep=True)
    mode = entry.mode or s.pipeline.mode
    camera = {"uri": entry.uri, "camera_id": camera_id}
    if mode == "trigger":
        camera["trigger"] = "software"
        mode = "lossless"
    s.camera = s.camera.model_copy(update=camera)
    pipeline = {"mode": mode}
    if entry.infer_timeout_s is not None:
        pipeline["infer_timeout_s"] = entry.infer_timeout_s
    s.pipeline = s.pipeline.model_copy(update=pipeline)
    model = {k: v for k, v in (("dir", entry.model_dir), ("image_threshold", entry.image_threshold),
                               ("pixel_threshold", entry.pixel_threshold)) if v is not None}
    s.model = s.model.model_copy(update=model)
    return s

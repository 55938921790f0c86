"""The verdict for one frame: what the pipeline decides and the protocol publishes.

Pure data. ``Verdict`` is the pipeline's in-memory type; the wire message is
``protocol.messages.VerdictMsg``, built from it in one place (``VerdictMsg.from_verdict``). ``Region`` is
both: its annotations are the wire's bounds, checked when a message is validated (not when the pipeline
builds one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, Strict

Label = Literal["ok", "ng", "unknown"]

_Px = Annotated[int, Strict(), Field(ge=0)]


@dataclass
class Region:
    """A defect region in original-image pixels: bounding box (x, y, w, h), area in px, and the anomaly
    map's value at its peak (map units: z units for a fused map)."""

    x: _Px
    y: _Px
    w: _Px
    h: _Px
    area: _Px
    peak: Annotated[float, Strict(), Field(allow_inf_nan=False)]


@dataclass
class Verdict:
    camera_id: str
    seq: int  # the frame's per-camera sequence number
    label: Label
    score: float | None  # the image score the rule compares (see decision.py); None when label == "unknown"
    normalised_score: float | None  # clip((score - threshold) / (norm_max - norm_min) + 0.5, 0, 1)
    threshold: float  # image threshold in force when deciding
    t_capture_wall: float  # epoch seconds (UTC) at capture
    t_decision_wall: float  # epoch seconds (UTC) at decision
    part_id: str | None = None
    regions: list[Region] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)  # per stage: capture_wait, preprocess, infer, decide
    error: str | None = None  # why the label is "unknown"
    model_id: str = ""
    model_version: str = ""
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (h, w) float32 in [0,1] or None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("heatmap", None)
        return d

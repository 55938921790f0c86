"""The verdict for one frame: what the pipeline decides and the protocol publishes.

Pure data; the wire format (JSON body, topics, heat-map frame) is owned by ``protocol.messages``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

Label = Literal["ok", "ng", "unknown"]


@dataclass
class Region:
    """A defect region in original-image pixels: bounding box (x, y, w, h), area in px, peak map value."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak: float


@dataclass
class Verdict:
    camera_id: str
    seq: int  # the frame's per-camera sequence number
    label: Label
    score: float | None  # raw image score; None when label == "unknown"
    normalised_score: float | None
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

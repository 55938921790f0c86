"""Pipeline, model and decision sections of the settings (owned by the pipeline package)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ModelSettings(BaseModel):
    dir: Path | None = None
    backend: str = Field(default="auto", pattern="^(auto|onnxruntime|tensorrt)$")
    # None: use the manifest's calibrated threshold; set to override without re-export.
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    intra_op_threads: int | None = Field(default=None, gt=0)


class PipelineSettings(BaseModel):
    mode: str = Field(default="free-run", pattern="^(free-run|lossless)$")
    queue_size: int = Field(default=4, ge=1, le=1024)
    infer_timeout_s: float = Field(default=5.0, gt=0)
    heatmap: bool = False
    min_region_area_px: int = Field(default=16, ge=0)
    stats_interval_s: float = Field(default=10.0, gt=0)
    max_frames: int | None = Field(default=None, ge=1)

"""Pipeline, model and decision sections of the settings (owned by the pipeline package)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    dir: Path | None = None
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    # None: use the manifest's calibrated threshold; set to override without re-export. Checked when the
    # model loads (decision.Thresholds.check): finite and not below the manifest's score_lower_bound /
    # map_lower_bound (none for fused z-scores, which may be negative).
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    intra_op_threads: int | None = Field(default=None, gt=0)


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    # free-run: latest frame wins, older waiting frames are dropped and counted;
    # lossless: every frame is judged and the camera is back-pressured;
    # auto: lossless for recorded sources (file://, dir://: their frames wait for us, so dropping them
    # loses data for nothing), free-run for cameras (synthetic:// included: it runs on its own clock).
    mode: Literal["auto", "free-run", "lossless"] = "auto"
    # Depth of the frame queues in lossless mode and of the verdict queue (free-run frame queues hold 1).
    queue_size: int = Field(default=4, ge=1, le=1024)
    infer_timeout_s: float = Field(default=5.0, gt=0)
    heatmap: bool = False
    min_region_area_px: int = Field(default=16, ge=0)
    stats_interval_s: float = Field(default=10.0, gt=0)
    max_frames: int | None = Field(default=None, ge=1)
    # Largest number of defect regions reported per verdict (highest peaks first).
    max_regions: int = Field(default=32, ge=1)
    # Inferences on a blank frame after (re)loading a model, before frames are judged.
    warmup_runs: int = Field(default=2, ge=0)
    # stop(): how long to wait for frames already taken to be judged and published.
    drain_timeout_s: float = Field(default=30.0, gt=0)
    # A WARNING in the log (and in systemd's STATUS=) while running when more than this share of the
    # frames (queue drops and camera gaps, over at least 20 frames) was dropped. None: never warn.
    drop_warn_share: float | None = Field(default=0.1, ge=0, le=1)

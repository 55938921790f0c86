"""Camera section of the settings (owned by the camera package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CameraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    uri: str = "synthetic://"
    camera_id: str = "cam0"
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    fps: float | None = Field(default=None, gt=0)
    trigger: str = Field(default="free", pattern="^(free|software|hardware)$")
    exposure_us: float | None = Field(default=None, gt=0)
    gain_db: float | None = None
    pixel_format: str | None = None
    read_timeout_s: float = Field(default=2.0, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)

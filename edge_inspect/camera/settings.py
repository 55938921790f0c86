"""Camera section of the settings (owned by the camera package).

Values given in the camera URI's query (``gige://10.0.0.5?exposure_us=800``) win over these fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CameraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    uri: str = "synthetic://"
    camera_id: str = "cam0"
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    fps: float | None = Field(default=None, gt=0)
    trigger: Literal["free", "software", "hardware"] = "free"
    exposure_us: float | None = Field(default=None, gt=0)
    gain_db: float | None = None
    pixel_format: str | None = None
    read_timeout_s: float = Field(default=2.0, gt=0)
    # Reconnecting a camera that was lost: full open attempts back off from reconnect_initial_s, doubling
    # up to reconnect_max_s. Between attempts a camera that can be probed cheaply (RTSP: a TCP connect;
    # V4L2: the device node; dir://: the folder) is probed every reconnect_probe_s, and opened at once
    # when the probe says it is back.
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=2.0, gt=0)
    reconnect_probe_s: float = Field(default=0.25, gt=0)
    # A camera that was never opened in this run is not retried for ever: `run` keeps trying for this
    # long (seconds), then exits with one line. 0: the first failed open ends the run (a wrong URI or a
    # missing device is reported at once; systemd's Restart= tries again later).
    wait_at_start_s: float = Field(default=0.0, ge=0)
    # Opening a network camera (RTSP, GigE) gives up after this many seconds.
    open_timeout_s: float = Field(default=5.0, gt=0)
    # Free-run live camera: no new frame for this long (at least 3 frame periods) means the camera is
    # lost, even when the driver keeps returning old or black frames; it is then reopened.
    stall_timeout_s: float = Field(default=5.0, gt=0)
    # Live cameras: a frame whose brightest pixel is at or below this (8-bit scale) is a dead-stream
    # black frame and is dropped and counted, never inspected. None: keep black frames.
    black_level: int | None = Field(default=4, ge=0, le=255)
    # Live cameras: drop (and count) a frame identical to the previous one or with the same source
    # timestamp: a hung stream repeating itself, not a new part.
    drop_repeated: bool = True

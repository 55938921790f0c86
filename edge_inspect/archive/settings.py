"""The ``[archive]`` section: the defect archive (owned by the archive package)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ArchiveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    enabled: bool = False  # ``run --archive DIR`` turns it on
    dir: Path | None = None  # images live here (and index.sqlite, unless index_url is set)
    # None: SQLite (WAL) at DIR/index.sqlite. postgresql://user@host/db: a shared index (psycopg 3).
    index_url: str | None = None
    station: str | None = None  # this station's name in a shared index; None: the host name
    ok_sample: float = Field(default=0.0, ge=0.0, le=1.0)  # share of OK parts stored (every NG part is)
    store_unknown: bool = True  # parts that could not be judged (image only, no heat map)
    image_format: Literal["png", "jpeg"] = "png"  # the original image; the overlay is always JPEG
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    max_size_mb: float = Field(default=2048.0, gt=0)  # oldest parts go first past this total
    max_age_days: float | None = Field(default=30.0, gt=0)  # None: no age limit
    queue_size: int = Field(default=64, ge=1, le=100_000)  # parts waiting for the writer; full = counted drop

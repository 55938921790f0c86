"""The ``[view]`` section: the live web view (owned by the view package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


def split_host_port(text: str) -> tuple[str, int]:
    """"ADDR:PORT" (IPv6 as "[::1]:8080") → (host, port); ValueError when it is not one."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected ADDR:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    return host.strip("[]"), int(port)


class ViewSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    enabled: bool = False  # off by default; ``run --view ADDR:PORT`` turns it on
    bind: str = "127.0.0.1:8080"  # port 0: any free port (the log says which)
    # Required when ``bind`` is not a loopback address: the page asks ?token=... or the X-View-Token header.
    token: SecretStr | None = None
    fps: float = Field(default=5.0, gt=0, le=30)  # view frames per second per camera at most (overlay + JPEG)
    width: int = Field(default=960, ge=64, le=4096)  # view frames are scaled down to this width
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    trend_parts: int = Field(default=300, ge=10, le=100_000)  # the score trend's length in parts
    ng_thumbnails: int = Field(default=6, ge=0, le=50)

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        split_host_port(v)
        return v

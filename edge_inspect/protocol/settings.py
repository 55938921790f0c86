"""Publisher, control-channel and security sections of the settings (owned by the protocol package)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class PublisherSettings(BaseModel):
    bind: str = "tcp://127.0.0.1:5555"
    line_id: str = "line1"
    sndhwm: int = Field(default=1000, ge=1)
    linger_ms: int = Field(default=1000, ge=0)
    heartbeat_s: float = Field(default=1.0, gt=0)
    history: int = Field(default=1000, ge=0)  # verdicts kept for the control channel's 'last'


class ControlSettings(BaseModel):
    enabled: bool = True
    bind: str = "tcp://127.0.0.1:5556"


class SecuritySettings(BaseModel):
    # "auto": CURVE on when binding to a non-loopback address, off on loopback.
    curve: str = Field(default="auto", pattern="^(auto|on|off)$")
    server_secret_key: Path | None = None
    allowed_clients_dir: Path | None = None

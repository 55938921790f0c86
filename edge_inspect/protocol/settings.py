"""Publisher, control-channel and security sections of the settings (owned by the protocol package)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .endpoints import normalise_endpoint

# Every bind/connect endpoint is checked and completed in one place: "127.0.0.1:5555" -> "tcp://127.0.0.1:5555".
Endpoint = Annotated[str, AfterValidator(normalise_endpoint)]


class PublisherSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    bind: Endpoint = "tcp://127.0.0.1:5555"  # "tcp://127.0.0.1:*": an ephemeral port (see publisher.endpoint)
    line_id: str = Field(default="line1", pattern=r"^[A-Za-z0-9_-]{1,64}$")  # part of the topic: no dots
    sndhwm: int = Field(default=1000, ge=1)  # messages queued per subscriber before ZeroMQ drops for it
    linger_ms: int = Field(default=1000, ge=0)  # how long close() may wait to flush queued messages
    heartbeat_s: float = Field(default=1.0, gt=0)
    history: int = Field(default=1000, ge=0)  # verdicts kept for the control channel's 'last'
    queue_size: int = Field(default=1000, ge=1)  # publish() -> sender thread; full = counted publish drop
    send_heatmap: bool = True  # attach the verdict's heat map (if the pipeline made one) as frame 2


class ControlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    enabled: bool = True
    bind: Endpoint = "tcp://127.0.0.1:5556"


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    # "auto": CURVE on when binding to a non-loopback address, off on loopback.
    curve: Literal["auto", "on", "off"] = "auto"
    # A zmq certificate .key_secret file; relative paths are looked up in $CREDENTIALS_DIRECTORY first.
    # Unset: $CREDENTIALS_DIRECTORY/curve-server.key_secret.
    server_secret_key: Path | None = None
    # Directory of allowed client public keys (*.key). Unset: $CREDENTIALS_DIRECTORY/curve-client*.
    allowed_clients_dir: Path | None = None

"""Typed settings, built per call from layered sources (highest priority first):

1. command-line flags (``load_settings(..., overrides)``),
2. environment ``EDGE_INSPECT_<SECTION>__<KEY>``, e.g. ``EDGE_INSPECT_PIPELINE__MODE=lossless``,
3. a secrets directory: one file per setting, named like its environment variable
   (``EDGE_INSPECT_CAMERA__URI`` holding ``rtsp://user:password@cam/stream``); by default systemd's
   ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=EDGE_INSPECT_CAMERA__URI:/etc/edge-inspect/camera-uri``),
4. the TOML file (``--config``, else /etc/edge-inspect/config.toml when it exists): ``[pipeline] mode = "lossless"``,
5. the defaults declared on the models.

Each call builds its own pydantic-settings sources and merges them key by key, so an environment
variable overrides one key of a section and keeps the TOML file's other keys. (pydantic-settings'
documented TOML example returns only the TOML source and so drops environment overrides; here every
source is always in the list.) Nothing is kept between calls, and no class is patched at import:
``Settings(...)`` on its own validates the values it is given over the defaults and reads nothing
from outside. ``load_settings`` turns every validation error into one ConfigError line naming the
field and where its value came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from .archive.settings import ArchiveSettings
from .camera.settings import CameraSettings
from .errors import ConfigError
from .health.settings import DriftSettings
from .pipeline.settings import ModelSettings, PipelineSettings
from .pipeline.station_settings import CameraEntry, StationSettings
from .protocol.settings import ControlSettings, PublisherSettings, SecuritySettings
from .view.settings import ViewSettings

DEFAULT_CONFIG = Path("/etc/edge-inspect/config.toml")
ENV_PREFIX = "EDGE_INSPECT_"
NESTED_DELIMITER = "__"


class Settings(BaseSettings):
    # Every section model forbids unknown keys itself (tests/test_settings.py checks that each one does).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        protected_namespaces=(),
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    model: ModelSettings = Field(default_factory=ModelSettings)
    camera: CameraSettings = Field(default_factory=CameraSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    # Several cameras in one station (pipeline.station): one [[cameras]] table each; empty: the one [camera].
    cameras: list[CameraEntry] = Field(default_factory=list)
    station: StationSettings = Field(default_factory=StationSettings)
    view: ViewSettings = Field(default_factory=ViewSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the values given: load_settings builds the outside sources for each call (settings_layers).
        return (init_settings,)


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                  secrets_dir: str | Path | None = None) -> Settings:
    """Build Settings from the command line ``overrides``, the environment, a secrets directory, a TOML
    file and the defaults, in that priority.

    config: the TOML file; None: /etc/edge-inspect/config.toml when it exists (unless
    EDGE_INSPECT_NO_DEFAULT_CONFIG=1). overrides: nested dict, e.g. ``{"camera": {"uri": "dir://imgs"}}``;
    None values are ignored. secrets_dir: None: $CREDENTIALS_DIRECTORY when set.
    Raises ConfigError with one line naming the bad field, and the file or variable it came from.
    """
    layers = settings_layers(config, overrides, secrets_dir)
    merged: dict[str, Any] = {}
    for _, values in reversed(layers):  # lowest priority first; each layer overrides key by key
        merged = _deep_merge(merged, values)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, layers)) from exc


def settings_layers(config: str | Path | None = None, overrides: dict[str, Any] | None = None,
                    secrets_dir: str | Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The raw values of each source, highest priority first: [(where they came from, nested dict)]."""
    layers: list[tuple[str, dict[str, Any]]] = [("command line", _drop_none(overrides or {}))]
    try:
        layers.append(("env", EnvSettingsSource(Settings)()))
    except SettingsError as exc:  # e.g. a whole section given as text that is not JSON
        raise ConfigError(_flat(f"environment {ENV_PREFIX}*: {exc}")) from exc
    secrets = _secrets_dir(secrets_dir)
    if secrets is not None:
        try:
            source = NestedSecretsSettingsSource(Settings, secrets_dir=secrets, secrets_dir_missing="ok")
            layers.append((f"secrets dir {secrets}", source()))
        except (SettingsError, OSError) as exc:
            raise ConfigError(f"secrets directory {secrets}: {exc}") from exc
    path = _config_path(config)
    if path is not None:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            layers.append((str(path), TomlConfigSettingsSource(Settings, toml_file=path)()))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({_flat(str(exc))})") from exc
    return layers


def _config_path(config: str | Path | None) -> Path | None:
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if DEFAULT_CONFIG.is_file() and os.environ.get("EDGE_INSPECT_NO_DEFAULT_CONFIG") != "1":
        return DEFAULT_CONFIG
    return None


def _secrets_dir(secrets_dir: str | Path | None) -> Path | None:
    """The given directory (which must exist), else systemd's $CREDENTIALS_DIRECTORY when it is one."""
    if secrets_dir is not None:
        path = Path(secrets_dir)
        if not path.is_dir():
            raise ConfigError(f"secrets directory not found: {path}")
        return path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(credentials) if credentials and Path(credentials).is_dir() else None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out


def _one_line(exc: ValidationError, layers: list[tuple[str, dict[str, Any]]]) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or "(root)"
    value = err.get("input")
    shown = f" got {value!r}:" if value is not None and not isinstance(value, dict) else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return _flat(f"invalid setting '{field}' (from {_origin(loc, layers)}):{shown} {err['msg']}{more}")


def _origin(loc: list[str], layers: list[tuple[str, dict[str, Any]]]) -> str:
    """Where the value at ``loc`` came from: the highest layer that sets it (for a whole section, every
    layer that sets some of it)."""
    found = []
    for where, values in layers:
        node: Any = values
        for key in loc:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is None:
            continue
        if where == "env" or where.startswith("secrets dir"):
            name = (ENV_PREFIX + NESTED_DELIMITER.join(loc).upper()
                    + (NESTED_DELIMITER + "*" if isinstance(node, dict) else ""))
            where = f"env {name}" if where == "env" else f"{where[len('secrets dir '):]}/{name}"
        if not isinstance(node, dict):
            return where
        found.append(where)
    return " and ".join(found) or "a file, env EDGE_INSPECT_* or command line"


def _flat(text: str) -> str:
    return " ".join(text.split())

"""Typed settings: defaults < TOML file < environment (EDGE_INSPECT_*, nested with '__') < secrets dir < CLI.

Example: ``EDGE_INSPECT_PIPELINE__MODE=lossless`` or, in the TOML file, ``[pipeline] mode = "lossless"``.
``load_settings`` turns every validation error into one ConfigError line naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .camera.settings import CameraSettings
from .errors import ConfigError
from .health.settings import DriftSettings
from .pipeline.settings import ModelSettings, PipelineSettings
from .protocol.settings import ControlSettings, PublisherSettings, SecuritySettings

DEFAULT_CONFIG = Path("/etc/edge-inspect/config.toml")

# A misspelt key in any section is an error, not silently ignored; enforced here for every section
# so the section modules (owned by their packages) cannot forget it.
for _section in (CameraSettings, ModelSettings, PipelineSettings, PublisherSettings, ControlSettings, SecuritySettings,
                 DriftSettings):
    _section.model_config["extra"] = "forbid"
    _section.model_rebuild(force=True)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGE_INSPECT_",
        env_nested_delimiter="__",
        extra="forbid",
        protected_namespaces=(),
    )

    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    model: ModelSettings = Field(default_factory=ModelSettings)
    camera: CameraSettings = Field(default_factory=CameraSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is priority: CLI (init) > env > secrets dir > TOML. Keep env_settings in the tuple:
        # returning only the TOML source (as the docs' example does) silently drops env overrides.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        toml_file = _TOML_FILE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


_TOML_FILE: dict[str, Path | None] = {"path": None}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build Settings from an optional TOML file, the environment and CLI ``overrides``.

    overrides: nested dict, e.g. ``{"camera": {"uri": "dir://imgs"}}``; None values are ignored.
    Raises ConfigError with one line naming the bad field or file.
    """
    path: Path | None = None
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    elif DEFAULT_CONFIG.is_file() and os.environ.get("EDGE_INSPECT_NO_DEFAULT_CONFIG") != "1":
        path = DEFAULT_CONFIG
    clean = _drop_none(overrides or {})
    _TOML_FILE["path"] = path
    try:
        if clean:
            # Merge CLI overrides into each section so a partial override keeps env/TOML values.
            base = Settings()
            return Settings(**_deep_merge(base.model_dump(), clean))
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from exc
    finally:
        _TOML_FILE["path"] = None


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


def _one_line(exc: ValidationError, path: Path | None) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(root)"
    where = f" (from {path}, env EDGE_INSPECT_* or command line)" if path else " (from env EDGE_INSPECT_* or command line)"
    value = err.get("input")
    shown = f" got {value!r}:" if value is not None and not isinstance(value, dict) else ""
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"invalid setting '{field}'{where}:{shown} {err['msg']}{more}"

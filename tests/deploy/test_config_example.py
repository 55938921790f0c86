"""deploy/config.example.toml loads, and documents every setting there is."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from edge_inspect.settings import Settings, load_settings
from tests.deploy.unitfile import DEPLOY

EXAMPLE = DEPLOY / "config.example.toml"


def _keys_by_section(text: str) -> dict[str, set[str]]:
    """Keys set or shown commented out (``# key = value``) per [section]; top level is ""."""
    found: dict[str, set[str]] = {"": set()}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[([A-Za-z0-9_.]+)\]\s*$", line)
        if header:
            section = header.group(1)
            found.setdefault(section, set())
            continue
        key = re.match(r"^#?\s?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\S", line)
        if key:
            found[section].add(key.group(1))
    return found


def _expected_fields() -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {"": set()}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            expected[name] = set(annotation.model_fields)
        else:
            expected[""].add(name)
    return expected


def test_example_loads_through_load_settings():
    settings = load_settings(EXAMPLE)
    assert settings.model.dir == Path("/var/lib/edge-inspect/model")
    assert settings.security.allowed_clients_dir == Path("/etc/edge-inspect/curve/clients")


def test_example_documents_every_setting():
    found = _keys_by_section(EXAMPLE.read_text())
    for section, fields in _expected_fields().items():
        missing = fields - found.get(section, set())
        assert not missing, f"[{section or 'top level'}] of {EXAMPLE.name} lacks: {sorted(missing)}"
        unknown = found.get(section, set()) - fields
        assert not unknown, f"[{section or 'top level'}] of {EXAMPLE.name} has unknown keys: {sorted(unknown)}"


def test_every_key_has_a_comment_above_it():
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            j = i - 1
            # Skip sibling keys (set or commented out) that share the comment above them.
            while j >= 0 and re.match(r"^#?\s?[A-Za-z_][A-Za-z0-9_]*\s*=", lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"line {i + 1} ({line!r}) has no explanation above it"


def test_commented_out_values_are_valid_too(tmp_path):
    # Un-commenting an example value must give a valid config (no stale names or bad types).
    text = re.sub(r"^# ?([A-Za-z_][A-Za-z0-9_]* = .*)$", r"\1", EXAMPLE.read_text(), flags=re.M)
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(text)
    settings = load_settings(uncommented)
    assert settings.camera.width == 1920


def test_environment_overrides_the_file_section_by_field(monkeypatch):
    # The service unit sets the secret key path through the environment; the rest of [security] and
    # every other section must still come from the file.
    monkeypatch.setenv("EDGE_INSPECT_SECURITY__SERVER_SECRET_KEY", "/run/credentials/edge-inspect.service/k")
    monkeypatch.setenv("EDGE_INSPECT_PIPELINE__MODE", "lossless")
    settings = load_settings(EXAMPLE)
    assert settings.security.server_secret_key == Path("/run/credentials/edge-inspect.service/k")
    assert settings.security.allowed_clients_dir == Path("/etc/edge-inspect/curve/clients")
    assert settings.pipeline.mode == "lossless"
    assert settings.model.dir == Path("/var/lib/edge-inspect/model")

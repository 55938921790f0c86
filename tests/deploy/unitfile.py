"""Helpers for the deploy tests: read systemd unit files, locate the deploy folder and systemd-analyze."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("edge-inspect.service", "edge-inspect-engines.service")
INSTALLED_BINARY = "/opt/edge-inspect/venv/bin/edge-inspect"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; repeated keys (Environment=, SystemCallFilter=) keep all values."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: key outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd; scripts/ci-counterparts-deploy.sh)")
    return exe


def runnable_copy(unit: str, dest_dir: Path, binary: str) -> Path:
    """A copy of a unit whose ExecStart binary exists here (verify refuses a missing executable)."""
    text = (DEPLOY / unit).read_text()
    assert INSTALLED_BINARY in text
    out = dest_dir / unit
    out.write_text(text.replace(INSTALLED_BINARY, binary))
    return out

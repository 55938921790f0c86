"""Shared fixtures: a tiny exported model folder (no torch) for runtime tests."""

from __future__ import annotations

import pytest

from tests.fixtures.tiny_model import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A read-only-by-convention tiny model folder shared by the whole session; copy it before modifying."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(autouse=True)
def _no_default_config(monkeypatch):
    # Tests must not pick up /etc/edge-inspect/config.toml from the machine running them.
    monkeypatch.setenv("EDGE_INSPECT_NO_DEFAULT_CONFIG", "1")

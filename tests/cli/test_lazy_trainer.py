"""Training subcommands say which extra to install when torch is missing (one line, exit code 3)."""

from __future__ import annotations

import importlib.util

import pytest

from edge_inspect.cli import main
from edge_inspect.cli._lazy import import_trainer
from edge_inspect.errors import DependencyError


def test_missing_torch_names_the_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(DependencyError, match=r"edge-inspect\[train\]"):
        import_trainer("train")
    code = main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 3
    assert "edge-inspect[train]" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

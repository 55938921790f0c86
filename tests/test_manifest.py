from __future__ import annotations

import json
import shutil

import pytest

from edge_inspect.errors import ManifestError, ModelError
from edge_inspect.manifest import SCHEMA_VERSION, load_manifest


def _copy(src, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    return dst


def test_roundtrip(tiny_model_dir):
    m = load_manifest(tiny_model_dir)
    assert [g.name for g in m.graphs] == ["features", "head"]
    assert m.calibration.image_threshold == 0.5


def test_newer_schema_is_refused(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path)
    raw = json.loads((d / "manifest.json").read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    (d / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="newer"):
        load_manifest(d)


def test_missing_or_modified_graph(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path)
    (d / "head.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="sha256"):
        load_manifest(d)
    (d / "head.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_manifest(d)


def test_malformed_manifest(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "model_id": "x"}))
    with pytest.raises(ManifestError, match="invalid field"):
        load_manifest(tmp_path)

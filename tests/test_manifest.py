from __future__ import annotations

import json
import shutil

import numpy as np
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


@pytest.mark.parametrize("file", ["../../x.onnx", "/etc/passwd", "sub/../../head.onnx", " "])
def test_graph_files_must_stay_inside_the_model_folder(tiny_model_dir, tmp_path, file):
    d = _copy(tiny_model_dir, tmp_path)
    raw = json.loads((d / "manifest.json").read_text())
    raw["graphs"][1]["file"] = file
    (d / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"invalid field 'graphs\.1\.file'.*inside the model folder"):
        load_manifest(d, verify_files=False)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("image_threshold", "Infinity", "image_threshold must be a finite number"),
    ("image_threshold", "NaN", "image_threshold must be a finite number"),
    ("pixel_threshold", "-Infinity", "pixel_threshold must be a finite number"),
    ("norm_max", "NaN", "norm_max must be a finite number"),
    ("norm_max", "-5", "norm_max (-5.0) must be greater than norm_min"),
    ("map_norm_span", "0", "map_norm_span must be > 0"),
])
def test_non_finite_or_inconsistent_deciding_numbers_are_refused_at_load(tiny_model_dir, tmp_path, field, value,
                                                                          message):
    d = _copy(tiny_model_dir, tmp_path)
    text = (d / "manifest.json").read_text()
    raw = json.loads(text)
    old = json.dumps(raw["calibration"][field]) if field in raw["calibration"] else None
    raw["calibration"][field] = "__X__"
    # raw JSON tokens, as a user writes them
    (d / "manifest.json").write_text(json.dumps(raw).replace('"__X__"', value))
    expected = rf"{d}/manifest.json: invalid field 'calibration': {message}".replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ManifestError, match=expected):
        load_manifest(d)
    assert old is not None or field == "map_norm_span"


def test_schema_2_folders_still_load_without_the_schema_3_fields(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path)
    raw = json.loads((d / "manifest.json").read_text())
    raw["schema_version"] = 2
    for key in ("threshold_model", "score_lower_bound", "map_lower_bound", "escape_rate", "escape_interval",
                "defects_source"):
        raw["calibration"].pop(key, None)
    raw.pop("score_fusion", None)
    (d / "manifest.json").write_text(json.dumps(raw))
    m = load_manifest(d)
    assert m.schema_version == 2 and m.calibration.threshold_model is None and m.score_fusion is None


def test_schema_3_folders_load_square_stretched_and_untiled(tiny_model_dir, tmp_path):
    import cv2

    from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
    from edge_inspect.preprocess import preprocess, restore_outputs

    d = _copy(tiny_model_dir, tmp_path)
    raw = json.loads((d / "manifest.json").read_text())
    raw["schema_version"] = 3
    for key in ("fit", "pad_value", "tiles"):
        raw["input"].pop(key)
    (d / "manifest.json").write_text(json.dumps(raw))
    m = load_manifest(d)
    assert m.schema_version == 3 and m.input.fit == "stretch" and m.input.tiles is None
    image = np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8)
    x = preprocess(image, m.input)
    # as before schema 4: the whole image resized to the input, aspect not kept
    rgb = cv2.resize(image[:, :, ::-1], (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), (rgb - m.input.mean) / np.array(m.input.std), atol=1e-5)
    with OnnxRuntimeBackend(d, m) as be:
        out = be.infer({"image": x})
    assert restore_outputs(out, image.shape[:2], m) is out  # maps at model resolution, as before

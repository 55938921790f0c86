"""Verification logic without a GPU: tolerance criterion, record filling, reference tensors, inputs, parser errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.errors import DataError
from edge_inspect.manifest import EngineRecord, load_manifest, save_manifest
from edge_inspect.preprocess import preprocess
from engines.builder import parser_errors
from engines.verify import (
    TOLERANCES,
    compare,
    judge,
    load_images,
    reference_tensors,
    synthetic_images,
)
from tests.fixtures.tiny_model import grey_image


def _record(graph="features", precision="fp16") -> EngineRecord:
    return EngineRecord(
        graph=graph, file=f"engines/{graph}.{precision}.0000000000000000.engine", sha256="0" * 64,
        onnx_sha256="1" * 64, precision=precision, tensorrt_version="10.3.0", gpu_name="Orin",
        compute_capability="8.7", inputs=[], outputs=[], built_at="2025-01-01T00:00:00+00:00", build_seconds=1.0,
    )


def test_fp16_criterion_scales_with_the_tensor_range():
    ref = np.array([0.0, 0.001, 5.0, -10.0], np.float32)
    tol = TOLERANCES["fp16"]
    # error 0.05 on a tensor peaking at 10: allowed 1e-3 + 1e-2 * 10 = 0.101
    assert compare("f", ref + np.array([0.05, 0.05, 0, 0], np.float32), ref, tol).ok
    # the same error is a failure under fp32 tolerances (1e-4 + 1e-3 * 10 = 0.0101)
    assert not compare("f", ref + np.array([0.05, 0, 0, 0], np.float32), ref, TOLERANCES["fp32"]).ok
    c = compare("f", ref + np.array([0, 0, 0.2, 0], np.float32), ref, tol)
    assert not c.ok and c.max_abs_error == pytest.approx(0.2) and c.allowed == pytest.approx(0.101)


def test_shape_mismatch_and_nan_fail():
    ref = np.zeros((1, 4), np.float32)
    assert not compare("f", np.zeros((1, 5), np.float32), ref, TOLERANCES["fp32"]).ok
    assert not compare("f", np.array([[0, np.nan, 0, 0]], np.float32), ref, TOLERANCES["int8"]).ok


def test_tolerances_are_ordered_by_precision():
    assert TOLERANCES["fp32"].atol < TOLERANCES["fp16"].atol < TOLERANCES["int8"].atol
    assert TOLERANCES["fp32"].rtol < TOLERANCES["fp16"].rtol < TOLERANCES["int8"].rtol


def test_judge_fills_record_and_names_failures():
    ref = np.linspace(-1, 1, 16, dtype=np.float32)
    good = [compare("feat", ref + 1e-4, ref, TOLERANCES["fp16"])]
    rec, failures = judge(_record(), good)
    assert failures == [] and rec.tolerance == {"atol": 1e-3, "rtol": 1e-2}
    assert rec.max_abs_error == pytest.approx(1e-4, rel=1e-3)
    bad = good + [compare("score", ref + 0.5, ref, TOLERANCES["fp16"])]
    rec, failures = judge(_record(), bad)
    assert len(failures) == 1
    assert "'features'" in failures[0] and "'score'" in failures[0] and "rtol 0.01" in failures[0]
    assert rec.max_abs_error == pytest.approx(0.5, rel=1e-3)


def test_engine_records_round_trip_through_the_manifest(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    manifest = load_manifest(model)
    rec, _ = judge(_record(), [compare("feat", np.ones(3), np.ones(3), TOLERANCES["fp16"])])
    manifest.engines = [rec, _record("head", "fp32").model_copy(update={"dla_core": 1})]
    save_manifest(manifest, model)
    back = load_manifest(model)
    assert back.engines == manifest.engines
    assert back.engines[0].tolerance == {"atol": 1e-3, "rtol": 1e-2} and back.engines[0].max_abs_error == 0.0
    assert back.engines[1].dla_core == 1 and back.engines[1].max_abs_error is None


def test_reference_tensors_match_the_onnxruntime_backend(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    x = preprocess(grey_image(64, blob=True), manifest.input)
    tensors = reference_tensors(tiny_model_dir, manifest, x)
    assert set(tensors) >= {"image", "feat", "anomaly_map", "score"}
    assert tensors["feat"].shape == (1, 1, 16, 16)
    with OnnxRuntimeBackend(tiny_model_dir, manifest) as backend:
        out = backend.infer({"image": x})
    np.testing.assert_allclose(tensors["score"], out["score"], rtol=1e-5, atol=1e-6)
    assert float(tensors["score"][0]) > 1.0  # the blob image is anomalous: the reference is not trivially zero


def test_synthetic_images_are_deterministic_and_varied(tiny_model_dir):
    spec = load_manifest(tiny_model_dir).input
    a, b = synthetic_images(spec), synthetic_images(spec)
    assert len(a) == 4 and all(x.shape == (64, 64, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1]) and a[1].max() == 255 and a[3].min() == 0


def test_load_images(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_images(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("no image")
    with pytest.raises(DataError, match="no readable images"):
        load_images(tmp_path)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 30), 40 * i, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    images = load_images(tmp_path, limit=2)
    assert len(images) == 2 and images[1].shape == (20, 30) and images[1][0, 0] == 40


class _FakeError:
    def __init__(self, desc, node, name, op):
        self._d, self._n, self._name, self._op = desc, node, name, op

    def desc(self):
        return self._d

    def code(self):
        return "ErrorCode.UNSUPPORTED_NODE"

    def node(self):
        return self._n

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


class _FakeParser:
    def __init__(self, errors):
        self._errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self._errors[i]


def test_parser_errors_keeps_every_message():
    parser = _FakeParser([_FakeError("No importer registered for op: Foo", 3, "foo_1", "Foo"),
                          _FakeError("Invalid shape", 7, "", "Reshape")])
    messages = parser_errors(parser)
    assert len(messages) == 2
    assert "No importer registered for op: Foo" in messages[0] and "node 3 foo_1 Foo" in messages[0]
    assert "Invalid shape" in messages[1] and "UNSUPPORTED_NODE" in messages[1]


def test_parser_errors_falls_back_to_str():
    class Old:
        def __str__(self):
            return "In node 2 (parseGraph): INVALID_NODE"

    assert parser_errors(_FakeParser([Old()])) == ["In node 2 (parseGraph): INVALID_NODE"]


# ---- verify_model end to end on the stand-in TensorRT (tests/backends/fake_trt.py) ---------------------


@pytest.fixture
def fake_device(monkeypatch):
    from tests.backends import fake_trt

    return fake_trt.install(monkeypatch)


def test_verify_model_runs_each_engine_alone_through_the_runtime_runner(fake_device, tiny_model_dir,
                                                                        tmp_path):
    import shutil

    from engines.verify import verify_model
    from tests.backends.fake_trt import record_fake_engines

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    manifest = record_fake_engines(model)
    end_to_end = verify_model(model, manifest, images=[grey_image(64), grey_image(64, blob=True)])
    assert set(end_to_end) == {"score", "anomaly_map"} and max(end_to_end.values()) < 1e-5
    for rec in manifest.engines:
        assert rec.tolerance == {"atol": 1e-4, "rtol": 1e-3} and rec.max_abs_error < 1e-5
    # each engine alone (2 samples each), then the chained backend (2 samples x 2 engines)
    order = [name for name, _ in fake_device.executions]
    assert order == ["features.onnx"] * 2 + ["head.onnx"] * 2 + ["features.onnx", "head.onnx"] * 2
    assert fake_device.memory == {}  # every runner freed its buffers


def test_verify_model_names_the_engine_out_of_tolerance(fake_device, tiny_model_dir, tmp_path):
    import shutil

    from edge_inspect.errors import EngineError
    from engines.verify import verify_model
    from tests.backends.fake_trt import record_fake_engines

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    manifest = record_fake_engines(model, offsets={"head": 0.5})
    with pytest.raises(EngineError) as info:
        verify_model(model, manifest, images=[grey_image(64, blob=True)])
    msg = str(info.value)
    assert "engine 'head'" in msg and "'features'" not in msg and "--fp32-graph" in msg
    assert "output 'score'" in msg and "output 'anomaly_map'" in msg
    features, head = manifest.engines
    assert features.max_abs_error < 1e-5 and head.max_abs_error == pytest.approx(0.5, rel=1e-3)
    assert fake_device.memory == {}

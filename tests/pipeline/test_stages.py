"""Stage building blocks: the drop-oldest queue, the inference timeout guard, model loading."""

from __future__ import annotations

import shutil
import time

import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.errors import DependencyError, ModelError
from edge_inspect.pipeline.stages import InflightGuard, StageQueue, load_model


def test_put_latest_drops_oldest():
    q = StageQueue(2)
    assert q.put_latest(1) == [] and q.put_latest(2) == []
    assert q.put_latest(3) == [1]
    assert q.put_latest(4) == [2]
    assert [q.get(0), q.get(0)] == [3, 4]


def test_guard_finish_wins_before_timeout():
    clock = [0.0]
    g = InflightGuard(clock=lambda: clock[0])
    g.begin("job")
    clock[0] = 0.5
    assert g.expire(1.0) is None and g.busy_for() == 0.5
    assert g.finish() is True and g.busy_for() == 0.0


def test_guard_expire_claims_once():
    clock = [0.0]
    g = InflightGuard(clock=lambda: clock[0])
    g.begin("job")
    clock[0] = 2.0
    assert g.expire(1.0) == "job"
    assert g.expire(1.0) is None  # claimed once only
    assert g.busy_for() == 2.0  # the call itself is still running
    assert g.finish() is False  # the late result must be discarded


def _factory(model_dir, manifest):
    return OnnxRuntimeBackend(model_dir, manifest)


def test_load_model_thresholds_and_errors(tiny_model_dir, tmp_path):
    m = load_model(tiny_model_dir, _factory, image_threshold=0.9, warmup_runs=1, generation=3)
    try:
        assert m.thresholds.image == 0.9 and m.thresholds.pixel == 0.5 and m.generation == 3
        assert m.describe()["backend"] == "onnxruntime" and m.warmup_ms > 0
    finally:
        m.backend.close()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "head.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="sha256"):
        load_model(broken, _factory)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing", _factory)


def _recording_factory(backend_cls, closed: list):
    """A backend factory whose backends append True to ``closed`` when closed."""

    def factory(model_dir, manifest):
        be = backend_cls(model_dir, manifest)
        be.close = lambda: closed.append(True)
        return be

    return factory


def test_load_model_wraps_backend_failure(tiny_model_dir):
    class Exploding(OnnxRuntimeBackend):
        def infer(self, inputs):
            raise RuntimeError("device lost")

    closed = []
    factory = _recording_factory(Exploding, closed)
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="warm up: device lost"):
        load_model(tiny_model_dir, factory)
    assert closed == [True] and time.monotonic() - t0 < 10


def test_load_model_passes_edge_inspect_errors_through(tiny_model_dir):
    """A missing TensorRT (DependencyError, exit code 3) must not turn into a ModelError (exit code 1)."""

    class NeedsTensorRT(OnnxRuntimeBackend):
        def load(self):
            raise DependencyError("the TensorRT backend needs the Python package 'tensorrt'")

    closed = []
    factory = _recording_factory(NeedsTensorRT, closed)
    with pytest.raises(DependencyError, match="tensorrt") as err:
        load_model(tiny_model_dir, factory)
    assert not isinstance(err.value, ModelError) and err.value.exit_code == 3
    assert closed == [True]

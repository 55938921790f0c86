"""The TensorRT runner without a GPU: its planning functions on fake engine objects, and its whole
lifetime (deserialise, bind, copy, execute, free) against the stand-in tensorrt / pycuda of fake_trt."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.backends.tensorrt import TensorRTBackend
from edge_inspect.backends.tensorrt_runner import (
    EngineFile,
    EngineIO,
    IOTensor,
    TensorRTRunner,
    feed_batch,
    plan_buffers,
    read_engine_io,
)
from edge_inspect.errors import BackendError, EngineError, InputShapeError
from edge_inspect.manifest import load_manifest
from edge_inspect.preprocess import preprocess
from tests.backends import fake_trt
from tests.fixtures.tiny_model import grey_image

F32 = np.dtype(np.float32)


def _in(name, shape, max_batch=None, dtype=F32):
    max_batch = max_batch if max_batch is not None else (shape[0] if shape[0] > 0 else 1)
    return IOTensor(name, True, tuple(shape), dtype, max_batch)


def _out(name, shape, dtype=F32):
    return IOTensor(name, False, tuple(shape), dtype)


FEATURES = EngineIO("features", (_in("image", (-1, 3, 8, 8), 4), _out("feat", (-1, 1, 2, 2))))
HEAD = EngineIO("head", (_in("feat", (-1, 1, 2, 2), 2), _out("anomaly_map", (-1, 1, 8, 8)),
                         _out("score", (-1,))))


# ---- planning -------------------------------------------------------------------------------------


class _FakeEngine:
    """The part of ICudaEngine that read_engine_io uses."""

    def __init__(self, tensors):  # name -> (mode, shape, dtype, profile max batch)
        self.tensors = tensors
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, name):
        return self.tensors[name][0]

    def get_tensor_shape(self, name):
        return list(self.tensors[name][1])

    def get_tensor_dtype(self, name):
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name, profile):
        rest = tuple(self.tensors[name][1][1:])
        return [(1, *rest), (2, *rest), (self.tensors[name][3], *rest)]


TRT = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=np.dtype)


def test_read_engine_io_takes_the_batch_limit_from_the_profile_or_the_fixed_batch():
    engine = _FakeEngine({"image": ("in", (-1, 3, 8, 8), np.float32, 4),
                          "mask": ("in", (2, 8), np.float16, None),
                          "feat": ("out", (-1, 1, 2, 2), np.float32, None)})
    io = read_engine_io(TRT, engine, "features")
    assert [t.name for t in io.inputs] == ["image", "mask"] and [t.name for t in io.outputs] == ["feat"]
    image, mask = io.inputs
    assert image.dynamic and image.max_batch == 4 and image.shape == (-1, 3, 8, 8)
    assert not mask.dynamic and mask.max_batch == 2 and mask.dtype == np.float16
    assert io.outputs[0].max_batch is None


def test_read_engine_io_refuses_dynamic_axes_other_than_the_batch():
    engine = _FakeEngine({"image": ("in", (-1, 3, -1, 8), np.float32, 4)})
    with pytest.raises(EngineError, match=r"x.engine: input 'image' has dynamic non-batch axes"):
        read_engine_io(TRT, engine, "features", where="x.engine")


def test_plan_shares_one_buffer_per_name_and_pins_only_what_crosses_to_the_host():
    plan = plan_buffers([FEATURES, HEAD], outputs=["score", "anomaly_map", "global_score"])
    assert plan.max_batch == 2  # the smallest limit of all engines
    assert plan.inputs == ["image"]  # 'feat' is produced by 'features' before 'head' reads it
    assert plan.outputs == ["score", "anomaly_map"]  # in the order asked; names nobody produces skipped
    assert set(plan.tensors) == {"image", "feat", "anomaly_map", "score"}
    assert plan.tensors["image"].max_shape == (2, 3, 8, 8) and plan.tensors["score"].max_shape == (2,)
    assert {n for n, t in plan.tensors.items() if t.on_host} == {"image", "score", "anomaly_map"}
    assert plan.dynamic_inputs == {"features": [("image", (-1, 3, 8, 8))], "head": [("feat", (-1, 1, 2, 2))]}


def test_plan_default_outputs_are_the_tensors_no_engine_consumes():
    assert plan_buffers([FEATURES, HEAD]).outputs == ["anomaly_map", "score"]
    alone = plan_buffers([HEAD])  # the verifier's case: one engine, every output back, its inputs fed
    assert alone.inputs == ["feat"] and alone.outputs == ["anomaly_map", "score"] and alone.max_batch == 2


def test_plan_static_engines_run_at_their_fixed_batch():
    static = EngineIO("s", (_in("x", (1, 4)), _out("y", (1, 4))))
    plan = plan_buffers([static])
    assert plan.max_batch == 1 and plan.dynamic_inputs == {} and plan.tensors["y"].max_shape == (1, 4)


def test_plan_refuses_missing_required_output_and_dtype_disagreement():
    with pytest.raises(EngineError, match=r"no engine produces the model output 'score'; run 'edge-inspect"):
        plan_buffers([FEATURES], required_outputs=["score"], hint="run 'edge-inspect build --model m'")
    head16 = EngineIO("head", (_in("feat", (-1, 1, 2, 2), 2, np.dtype(np.float16)), _out("score", (-1,))))
    with pytest.raises(EngineError, match=r"'feat' is float32 in one engine and float16 in engine 'head'"):
        plan_buffers([FEATURES, head16])


def test_feed_batch_checks_names_shapes_dtypes_and_range():
    plan = plan_buffers([FEATURES, HEAD])
    x = np.zeros((2, 3, 8, 8), np.float32)
    assert feed_batch(plan, {"image": x, "unused": 1}) == 2
    assert feed_batch(plan, {"image": x[:1].astype(np.float64)}) == 1  # same_kind cast is fine
    with pytest.raises(InputShapeError, match="missing input 'image'"):
        feed_batch(plan, {"feat": x})
    with pytest.raises(InputShapeError, match=r"'image' has shape \(1, 3, 8, 9\), expected \(batch, 3, 8, 8"):
        feed_batch(plan, {"image": np.zeros((1, 3, 8, 9), np.float32)})
    with pytest.raises(InputShapeError, match="has dtype complex64"):
        feed_batch(plan, {"image": x.astype(np.complex64)})
    with pytest.raises(InputShapeError, match=r"batch 3 is outside the engines' range 1..2"):
        feed_batch(plan, {"image": np.zeros((3, 3, 8, 8), np.float32)})
    with pytest.raises(InputShapeError, match=r"batch 0 is outside"):
        feed_batch(plan, {"image": np.zeros((0, 3, 8, 8), np.float32)})
    two = plan_buffers([EngineIO("e", (_in("a", (-1, 2), 4), _in("b", (-1, 3), 4), _out("c", (-1,))))])
    with pytest.raises(InputShapeError, match="input 'b' has batch 1, other inputs have 2"):
        feed_batch(two, {"a": np.zeros((2, 2), np.float32), "b": np.zeros((1, 3), np.float32)})


# ---- the runner's lifetime on the stand-in device ---------------------------------------------------


@pytest.fixture
def fake(monkeypatch):
    return fake_trt.install(monkeypatch)


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def _engines(model_dir, max_batch=1, dla_core=None):
    manifest = fake_trt.record_fake_engines(model_dir, max_batch=max_batch, dla_core=dla_core)
    return manifest, [EngineFile(r.graph, model_dir / r.file, r.dla_core) for r in manifest.engines]


def _image_batch(manifest, *blobs):
    return np.concatenate([preprocess(grey_image(64, blob=b), manifest.input) for b in blobs])


def test_chained_engines_match_onnxruntime_and_keep_the_intermediate_on_the_device(fake, model):
    manifest, engines = _engines(model, max_batch=4)
    x = _image_batch(manifest, False, True, True)
    with OnnxRuntimeBackend(model, manifest) as ort_backend:
        want = ort_backend.infer({"image": x})
    with TensorRTRunner(engines, outputs=["score", "anomaly_map"]) as runner:
        assert runner.is_active and runner.max_batch == 4
        assert runner.input_names == ["image"] and runner.output_names == ["score", "anomaly_map"]
        assert not runner.plan.tensors["feat"].on_host and runner.plan.tensors["feat"].host is None
        assert fake.pinned == 3  # image, score, anomaly_map
        got = runner.infer({"image": x})
        one = runner.infer({"image": x[1:2]})
        assert runner.time_engines(runs=3, warmup=1) == {"features": [0.25] * 3, "head": [0.25] * 3}
    assert set(got) == {"score", "anomaly_map"} and got["anomaly_map"].shape == (3, 1, 64, 64)
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-6)
    np.testing.assert_allclose(got["anomaly_map"], want["anomaly_map"], rtol=1e-6)
    np.testing.assert_allclose(one["score"], want["score"][1:2], rtol=1e-6)
    # batch 1 at activation, then 3, then 1 again: every engine's dynamic input reshaped each time
    assert [s[0] for n, s in fake.input_shapes if n == "image"] == [1, 3, 1]
    assert [s[0] for n, s in fake.input_shapes if n == "feat"] == [1, 3, 1]
    assert {h for _, h in fake.executions} == {0xCAFE}  # every enqueue on the runner's stream


def test_outputs_are_copies_not_views_of_the_pinned_buffers(fake, model):
    manifest, engines = _engines(model)
    with TensorRTRunner(engines) as runner:
        first = runner.infer({"image": _image_batch(manifest, True)})
        kept = first["score"].copy()
        runner.infer({"image": _image_batch(manifest, False)})
    np.testing.assert_array_equal(first["score"], kept)


def test_deactivate_frees_everything_and_the_runner_can_be_activated_again(fake, model):
    manifest, engines = _engines(model)
    runner = TensorRTRunner(engines)
    runner.activate()
    runner.activate()  # idempotent
    assert len(fake.primary_contexts) == 1 and fake.memory
    runner.deactivate()
    assert not runner.is_active and fake.memory == {} and fake.context_stack == []
    assert fake.primary_contexts[0].detached
    with pytest.raises(BackendError, match="not active"):
        runner.infer({"image": _image_batch(manifest, False)})
    runner.deactivate()  # twice is harmless
    with runner:
        assert runner.infer({"image": _image_batch(manifest, False)})["score"].shape == (1,)
    assert fake.memory == {}


def test_bad_feed_is_refused_before_the_device_is_touched(fake, model):
    manifest, engines = _engines(model, max_batch=2)
    with TensorRTRunner(engines) as runner:
        before = len(fake.executions)
        with pytest.raises(InputShapeError, match=r"batch 3 is outside the engines' range 1..2"):
            runner.infer({"image": _image_batch(manifest, False, False, False)})
        with pytest.raises(InputShapeError, match="missing input 'image'"):
            runner.infer({})
        assert len(fake.executions) == before


def test_an_engine_that_does_not_deserialise_is_named_and_nothing_leaks(fake, model):
    _, engines = _engines(model)
    engines[1].path.write_bytes(b"\x00not an engine")
    runner = TensorRTRunner(engines, hint="run 'edge-inspect build --model m' on this device")
    with pytest.raises(EngineError) as info:
        runner.activate()
    msg = str(info.value)
    assert str(engines[1].path) in msg and "could not deserialise" in msg
    assert "fake: the engine plan file is corrupt" in msg and msg.endswith("on this device")
    assert not runner.is_active and fake.memory == {} and fake.primary_contexts[0].detached


def test_missing_required_output_fails_activation_and_frees_the_device(fake, model):
    _, engines = _engines(model)
    with pytest.raises(EngineError, match="no engine produces the model output 'global_score'"):
        TensorRTRunner(engines[:1], required_outputs=["global_score"]).activate()
    assert fake.memory == {} and all(c.detached for c in fake.primary_contexts)


def test_dla_core_is_set_before_deserialising(fake, model):
    _, engines = _engines(model, dla_core=1)
    with TensorRTRunner(engines):
        pass
    assert fake.deserialised == [("features.onnx", 1), ("head.onnx", 1)]


def test_runner_without_tensorrt_says_what_is_missing(monkeypatch, model):
    from edge_inspect.backends import trt_probe
    from edge_inspect.errors import DependencyError

    missing = trt_probe.TrtEnvironment(missing=("the Python module 'tensorrt' is not importable",),
                                       missing_packages=True)
    monkeypatch.setattr(trt_probe, "probe_environment", lambda refresh=False: missing)
    with pytest.raises(DependencyError, match="TensorRT runner needs TensorRT.*'tensorrt' is not importable"):
        TensorRTRunner([EngineFile("features", model / "x.engine")]).activate()
    with pytest.raises(EngineError, match="at least one engine"):
        TensorRTRunner([])


# ---- the backend is the runner plus the model folder --------------------------------------------------


def test_tensorrt_backend_runs_the_recorded_engines_through_the_runner(fake, model):
    record = fake_trt.record_fake_engines(model, max_batch=2)
    manifest = load_manifest(model)
    assert manifest.engines == record.engines
    x = _image_batch(manifest, False, True)
    with OnnxRuntimeBackend(model, manifest) as ort_backend:
        want = ort_backend.infer({"image": x})
    backend = TensorRTBackend(model, manifest)
    assert backend.max_batch == 0
    with backend:
        assert backend.max_batch == 2
        got = backend.infer({"image": x})
        with pytest.raises(InputShapeError, match=r"model input: input 'image' has shape"):
            backend.infer({"image": np.zeros((1, 3, 32, 32), np.float32)})
        with pytest.raises(InputShapeError, match=r"range 1..2; rebuild with .*--max-batch 3"):
            backend.infer({"image": np.zeros((3, 3, 64, 64), np.float32)})
        times = backend.time_engines(runs=2, warmup=0)
    assert set(got) == {"score", "anomaly_map"} and got["score"].dtype == np.float32
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-6)
    assert set(times) == {"features", "head"}
    assert fake.memory == {} and backend.max_batch == 0
    with pytest.raises(BackendError, match="not loaded"):
        backend.infer({"image": x})

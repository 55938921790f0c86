"""TensorRT backend without TensorRT: lazy imports, usable() reasons, refusal of stale or foreign engines.

Engines are fabricated (EngineRecords + fake engine files in a copy of the tiny model folder) and the
environment probe is injected, so every refusal path runs on a machine without a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_inspect.backends import trt_probe
from edge_inspect.backends.select import open_backend
from edge_inspect.backends.tensorrt import TensorRTBackend
from edge_inspect.backends.trt_probe import TrtEnvironment, check_runnable, engine_problems, usable
from edge_inspect.errors import BackendError, DependencyError, EngineError
from edge_inspect.manifest import EngineRecord, load_manifest, save_manifest, sha256_file

ORIN = TrtEnvironment(tensorrt_version="10.3.0", pycuda_version="2024.1", gpu_name="Orin", compute_capability="8.7")
NO_TRT = TrtEnvironment(missing=("the Python module 'tensorrt' is not importable (No module named 'tensorrt')",),
                        missing_packages=True)


def _record(model_dir, graph, env=ORIN, precision="fp16") -> EngineRecord:
    manifest = load_manifest(model_dir)
    g = manifest.graph(graph)
    rel = f"engines/{graph}.{precision}.0123456789abcdef.engine"
    path = model_dir / rel
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(f"fake engine for {graph}".encode())
    return EngineRecord(
        graph=graph, file=rel, sha256=sha256_file(path), onnx_sha256=g.sha256, precision=precision,
        tensorrt_version=env.tensorrt_version, gpu_name=env.gpu_name, compute_capability=env.compute_capability,
        inputs=g.inputs, outputs=g.outputs, built_at="2025-01-01T00:00:00+00:00", build_seconds=1.0,
        tolerance={"atol": 1e-3, "rtol": 1e-2}, max_abs_error=1e-4,
    )


@pytest.fixture
def built_model(tiny_model_dir, tmp_path):
    """A copy of the tiny model with (fake) engines recorded for both graphs, built 'on' ORIN."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    manifest = load_manifest(model)
    manifest.engines = [_record(model, g.name) for g in manifest.graphs]
    save_manifest(manifest, model)
    return model


def test_module_imports_without_tensorrt_or_pycuda():
    code = ("import sys, edge_inspect.backends.tensorrt, edge_inspect.backends.select, "
            "edge_inspect.backends.trt_probe, edge_inspect.backends.tensorrt_runner, engines.verify; "
            "bad = [m for m in ('tensorrt', 'pycuda', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


def test_environment_reason_is_one_line_naming_what_is_missing():
    assert not NO_TRT.ok
    assert "tensorrt" in NO_TRT.reason and "\n" not in NO_TRT.reason
    with pytest.raises(DependencyError, match="tensorrt"):
        NO_TRT.raise_if_missing("the TensorRT backend")
    no_gpu = TrtEnvironment(tensorrt_version="10.3.0", pycuda_version="2024.1", missing=("no CUDA device found",))
    with pytest.raises(EngineError, match="no CUDA device"):
        no_gpu.raise_if_missing("the TensorRT backend")
    assert ORIN.ok and "Orin" in ORIN.reason


def test_real_probe_on_this_machine_is_consistent():
    env = trt_probe.probe_environment()
    if env.ok:
        assert env.tensorrt_version and env.gpu_name and env.compute_capability
    else:
        assert env.reason and "\n" not in env.reason


def test_usable_false_without_tensorrt(built_model):
    ok, reason = usable(built_model, load_manifest(built_model), env=NO_TRT)
    assert not ok and "tensorrt" in reason


def test_usable_false_without_engines(tiny_model_dir):
    ok, reason = usable(tiny_model_dir, load_manifest(tiny_model_dir), env=ORIN)
    assert not ok
    assert "no TensorRT engines recorded" in reason and "edge-inspect build" in reason


def test_usable_true_for_matching_engines(built_model):
    ok, reason = usable(built_model, load_manifest(built_model), env=ORIN)
    assert ok, reason
    assert "Orin" in reason and "fp16" in reason


def test_graph_without_engine_is_refused(built_model):
    manifest = load_manifest(built_model)
    manifest.engines = manifest.engines[:1]
    problems = engine_problems(built_model, manifest, ORIN)
    assert len(problems) == 1 and "no engine recorded for graph 'head'" in problems[0]


def test_missing_engine_file_is_refused(built_model):
    manifest = load_manifest(built_model)
    (built_model / manifest.engines[1].file).unlink()
    ok, reason = usable(built_model, manifest, env=ORIN)
    assert not ok
    assert manifest.engines[1].file in reason and "missing" in reason and "edge-inspect build" in reason


def test_modified_engine_file_is_refused(built_model):
    manifest = load_manifest(built_model)
    (built_model / manifest.engines[0].file).write_bytes(b"tampered")
    ok, reason = usable(built_model, manifest, env=ORIN)
    assert not ok
    assert "sha256" in reason and manifest.engines[0].file in reason and "--force" in reason


def test_engine_of_changed_onnx_is_refused(built_model):
    manifest = load_manifest(built_model)
    manifest.engines[0] = manifest.engines[0].model_copy(update={"onnx_sha256": "0" * 64})
    (problem,) = engine_problems(built_model, manifest, ORIN)
    assert "ONNX graph changed" in problem and "features.onnx" in problem and manifest.engines[0].file in problem


@pytest.mark.parametrize(
    "env, what",
    [
        (TrtEnvironment(tensorrt_version="10.7.0", pycuda_version="x", gpu_name="Orin", compute_capability="8.7"),
         "TensorRT 10.7.0"),
        (TrtEnvironment(tensorrt_version="10.3.0", pycuda_version="x", gpu_name="NVIDIA H100 80GB HBM3",
                        compute_capability="9.0"), "GPU 'NVIDIA H100 80GB HBM3'"),
        (TrtEnvironment(tensorrt_version="10.3.0", pycuda_version="x", gpu_name="Orin", compute_capability="8.6"),
         "compute 8.6"),
    ],
)
def test_foreign_engine_is_refused_naming_both_sides(built_model, env, what):
    manifest = load_manifest(built_model)
    problems = engine_problems(built_model, manifest, env)
    assert len(problems) == 2  # both graphs
    msg = problems[0]
    assert manifest.engines[0].file in msg
    assert "built for GPU 'Orin' (compute 8.7) / TensorRT 10.3.0" in msg
    assert what in msg and "run 'edge-inspect build --model" in msg


def test_first_problem_reported_with_count(built_model):
    foreign = TrtEnvironment(tensorrt_version="10.7.0", pycuda_version="x", gpu_name="Orin", compute_capability="8.7")
    ok, reason = usable(built_model, load_manifest(built_model), env=foreign)
    assert not ok and reason.endswith("(and 1 more)")


def test_check_runnable_raises_the_first_reason_or_returns_the_environment(built_model):
    manifest = load_manifest(built_model)
    assert check_runnable(built_model, manifest, env=ORIN) is ORIN
    with pytest.raises(DependencyError, match=r"^the verifier needs TensorRT.*tensorrt"):
        check_runnable(built_model, manifest, "the verifier", env=NO_TRT)
    foreign = TrtEnvironment(tensorrt_version="10.7.0", pycuda_version="x", gpu_name="Orin", compute_capability="8.7")
    with pytest.raises(EngineError, match=r"built for GPU 'Orin'.*TensorRT 10.7.0.*edge-inspect build") as info:
        check_runnable(built_model, manifest, env=foreign)
    assert "(and" not in str(info.value)  # one reason, the first


def test_auto_backend_falls_back_to_onnxruntime_with_reason(built_model, monkeypatch, caplog):
    monkeypatch.setattr(trt_probe, "probe_environment", lambda refresh=False: NO_TRT)
    with caplog.at_level("INFO", logger="edge_inspect.backends.select"):
        backend = open_backend(built_model, "auto")
    assert backend.name == "onnxruntime"
    assert "tensorrt" in caplog.text and "ONNX Runtime" in caplog.text


def test_auto_backend_picks_tensorrt_when_engines_match(built_model, monkeypatch):
    monkeypatch.setattr(trt_probe, "probe_environment", lambda refresh=False: ORIN)
    backend = open_backend(built_model, "auto")
    assert isinstance(backend, TensorRTBackend)  # not loaded: loading needs the real device


def test_load_refuses_without_tensorrt(built_model, monkeypatch):
    monkeypatch.setattr(trt_probe, "probe_environment", lambda refresh=False: NO_TRT)
    with pytest.raises(DependencyError, match="tensorrt"):
        TensorRTBackend(built_model, load_manifest(built_model)).load()


def test_load_refuses_foreign_engine_before_touching_the_device(built_model, monkeypatch):
    h100 = TrtEnvironment(tensorrt_version="10.3.0", pycuda_version="x", gpu_name="NVIDIA H100",
                          compute_capability="9.0")
    monkeypatch.setattr(trt_probe, "probe_environment", lambda refresh=False: h100)
    with pytest.raises(EngineError, match=r"built for GPU 'Orin'.*edge-inspect build"):
        TensorRTBackend(built_model, load_manifest(built_model)).load()


def test_infer_before_load_is_an_error(built_model):
    with pytest.raises(BackendError, match="not loaded"):
        TensorRTBackend(built_model, load_manifest(built_model)).infer({})

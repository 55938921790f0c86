"""Real TensorRT builds on the tiny model: build, verify, cache, run TensorRTBackend vs ONNX Runtime.

Needs an NVIDIA GPU with TensorRT 10 and pycuda; skipped elsewhere with the probe's reason.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.backends.tensorrt import TensorRTBackend
from edge_inspect.backends.trt_probe import probe_environment, usable
from edge_inspect.errors import InputShapeError
from edge_inspect.manifest import load_manifest
from edge_inspect.preprocess import preprocess
from tests.fixtures.tiny_model import grey_image

_ENV = probe_environment()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _ENV.ok, reason=f"needs TensorRT + CUDA: {_ENV.reason}")]


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_verify_and_run_against_onnxruntime(model, precision):
    from engines.builder import build_model
    from engines.cache import BuildOptions

    report = build_model(model, BuildOptions(precision=precision, workspace_mb=256))
    assert report.rebuilt == ["features", "head"]
    manifest = load_manifest(model)
    assert [r.graph for r in manifest.engines] == ["features", "head"]
    for rec in manifest.engines:
        assert rec.precision == precision and rec.gpu_name == _ENV.gpu_name
        assert rec.tensorrt_version == _ENV.tensorrt_version and rec.max_abs_error is not None
        assert rec.max_abs_error <= 1.0 and set(rec.tolerance) == {"atol", "rtol"}
    ok, reason = usable(model, manifest)
    assert ok, reason

    images = [grey_image(64), grey_image(64, blob=True)]
    with TensorRTBackend(model, manifest) as trt_be, OnnxRuntimeBackend(model, manifest) as ort_be:
        for img in images:
            x = preprocess(img, manifest.input)
            got, ref = trt_be.infer({"image": x}), ort_be.infer({"image": x})
            assert got["anomaly_map"].shape == (1, 1, 64, 64) and got["score"].shape == (1,)
            tol = 1e-4 if precision == "fp32" else 2e-2
            np.testing.assert_allclose(got["score"], ref["score"], atol=tol, rtol=tol)
        ng = trt_be.infer({"image": preprocess(images[1], manifest.input)})["score"][0]
        ok_score = trt_be.infer({"image": preprocess(images[0], manifest.input)})["score"][0]
        assert ng > manifest.calibration.image_threshold > ok_score
        with pytest.raises(InputShapeError, match="max-batch"):
            trt_be.infer({"image": np.zeros((2, 3, 64, 64), np.float32)})
        times = trt_be.time_engines(runs=5, warmup=1)
        assert set(times) == {"features", "head"} and all(len(t) == 5 for t in times.values())


def test_second_build_is_skipped_and_force_rebuilds(model):
    from engines.builder import build_model
    from engines.cache import BuildOptions

    opts = BuildOptions(precision="fp32", workspace_mb=256)
    first = build_model(model, opts)
    assert first.rebuilt == ["features", "head"]
    assert list((model / "engines").glob("timing-*.cache")), "timing cache saved beside the engines"
    assert build_model(model, opts).rebuilt == []
    assert build_model(model, opts, force=True).rebuilt == ["features", "head"]


def test_dynamic_batch_profile(model):
    from engines.builder import build_model
    from engines.cache import BuildOptions

    build_model(model, BuildOptions(precision="fp32", max_batch=4, workspace_mb=256))
    manifest = load_manifest(model)
    x = np.stack([preprocess(grey_image(64, blob=b), manifest.input)[0] for b in (False, True, False)])
    with TensorRTBackend(model, manifest) as trt_be, OnnxRuntimeBackend(model, manifest) as ort_be:
        assert trt_be.max_batch == 4
        np.testing.assert_allclose(trt_be.infer({"image": x})["score"], ort_be.infer({"image": x})["score"],
                                   atol=1e-4, rtol=1e-4)

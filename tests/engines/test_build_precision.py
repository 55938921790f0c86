"""The engine builder refuses Q/DQ graphs it cannot build, before touching TensorRT, in one line."""

from __future__ import annotations

import pytest

from edge_inspect.errors import EngineError
from edge_inspect.manifest import load_manifest
from engines.builder import check_graph_precision


def _int8(manifest, activations: str | None):
    from edge_inspect.manifest import Quantization

    graphs = [g.model_copy(update={"precision": "int8-qdq"}) for g in manifest.graphs]
    q = None if activations is None else Quantization(
        method="m", weights="w", activations=activations, calibration_method="MinMax", calibration_source="s",
        calibration_count=1, float_model="f", onnxruntime_version="1", thresholds="t", quantized_at="now")
    return manifest.model_copy(update={"graphs": graphs, "quantization": q})


def test_float_graphs_build_at_any_precision(tiny_model_dir):
    m = load_manifest(tiny_model_dir)
    for precision in ("fp16", "fp32", "int8"):
        check_graph_precision(m, precision)


def test_qdq_graphs_build_only_as_int8_with_symmetric_activations(tiny_model_dir):
    m = load_manifest(tiny_model_dir)
    sym = _int8(m, "int8 symmetric (zero point 0; TensorRT), per tensor")
    check_graph_precision(sym, "int8")
    with pytest.raises(EngineError, match="carry INT8 Q/DQ; build them with --precision int8"):
        check_graph_precision(sym, "fp16")
    with pytest.raises(EngineError, match="--activations s8-symmetric") as info:
        check_graph_precision(_int8(m, "uint8 asymmetric (ONNX Runtime on the CPU), per tensor"), "int8")
    assert "\n" not in str(info.value)

"""The ONNX MAC counter of benchmarks/engines.py on small graphs with hand-computed answers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.engines import DEVICES, count_cost, estimate_ms


def _weights(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _save(tmp_path, nodes, inputs, outputs, inits, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def test_conv_grouped_conv_and_transpose(tmp_path):
    nodes = [
        # 3x3 conv 8 -> 16, stride 1, pad 1 on 32x32: 16*32*32 outputs x 8*9 MACs = 1,179,648
        helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        # depthwise 3x3 (group 16), stride 2, pad 1: 16*16*16 outputs x 1*9 = 36,864
        helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=16),
        # transposed 2x2 stride 2, 16 -> 4: every input element (16*16*16) x 4*2*2 = 65,536
        helper.make_node("ConvTranspose", ["b", "w3"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    path = _save(
        tmp_path, nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 32, 32])],
        [_weights("w1", (16, 8, 3, 3)), _weights("w2", (16, 1, 3, 3)), _weights("w3", (16, 4, 2, 2))],
    )
    cost = count_cost(path)
    assert cost.macs == 1_179_648 + 36_864 + 65_536
    assert cost.kernels == 3
    assert cost.weight_elems == 16 * 8 * 9 + 16 * 9 + 16 * 4 * 4
    assert cost.activation_elems == 16 * 32 * 32 + 16 * 16 * 16 + 4 * 32 * 32
    assert count_cost(path, batch=2).macs == 2 * cost.macs  # batch scales linearly


def test_gemm_and_batched_matmul(tmp_path):
    nodes = [
        # Gemm with transB: (1, 64) x (32, 64)^T -> (1, 32): 32 * 64 = 2048
        helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
        helper.make_node("Reshape", ["h", "shape"], ["h3"]),
        # MatMul (1, 4, 8) x (8, 5) -> (1, 4, 5): 20 outputs x 8 = 160
        helper.make_node("MatMul", ["h3", "m"], ["y"]),
    ]
    path = _save(
        tmp_path, nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5])],
        [_weights("w", (32, 64)), _weights("m", (8, 5)),
         numpy_helper.from_array(np.array([1, 4, 8], np.int64), "shape")],
    )
    assert count_cost(path).macs == 2048 + 160


def test_tiny_fixture_has_no_macs(tiny_model_dir):
    # Only resize and a reduction: no multiply-accumulate layer, but two kernels TensorRT cannot fuse away.
    cost = count_cost(tiny_model_dir / "head.onnx")
    assert cost.macs == 0 and cost.kernels == 2
    assert cost.activation_elems == 64 * 64 + 1  # anomaly_map (1,1,64,64) and score (1,)


def test_estimate_is_bounded_by_compute_memory_and_layers():
    from benchmarks.engines import GraphCost

    orin = DEVICES[0]
    heavy = GraphCost(macs=int(10e9), kernels=50, activation_elems=10_000_000, weight_elems=1_000_000)
    slow, fast = estimate_ms(heavy, orin)
    # compute bound: 2 * 10 GMAC / (5 TFLOPs * 20 %) = 20 ms pessimistic; 35 % -> 11.4 ms
    assert slow == pytest.approx(20.0, rel=1e-6) and fast == pytest.approx(20.0 * 0.20 / 0.35, rel=1e-6)
    tiny = GraphCost(macs=1000, kernels=10, activation_elems=10, weight_elems=10)
    assert estimate_ms(tiny, orin) == pytest.approx((10 * orin.per_layer_us[0] / 1e3, 10 * orin.per_layer_us[1] / 1e3))

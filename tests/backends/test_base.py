"""``check_inputs``: the one model-input check every backend applies (ONNX Runtime and TensorRT alike)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.backends.base import check_inputs
from edge_inspect.errors import InputShapeError
from edge_inspect.manifest import TensorSpec

IMAGE = TensorSpec(name="image", shape=["batch", 3, 8, 8])


def test_any_batch_with_the_right_shape_and_dtype_passes():
    for batch in (1, 5):
        check_inputs([IMAGE], {"image": np.zeros((batch, 3, 8, 8), np.float32), "other": None}, "model input")


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({}, "model input: missing input 'image'"),
        ({"image": np.zeros((1, 3, 8, 8), np.float64)}, "input 'image' has dtype float64, expected float32"),
        ({"image": np.zeros((1, 3, 8, 9), np.float32)},
         r"has shape \(1, 3, 8, 9\), expected \('batch', 3, 8, 8\)"),
        ({"image": np.zeros((3, 8, 8), np.float32)}, r"has shape \(3, 8, 8\)"),
        ({"image": np.zeros((1, 1, 3, 8, 8), np.float32)}, r"has shape \(1, 1, 3, 8, 8\)"),
    ],
)
def test_mismatches_are_named_in_one_line(tensors, message):
    with pytest.raises(InputShapeError, match=message) as info:
        check_inputs([IMAGE], tensors, "model input")
    assert "\n" not in str(info.value)


def test_every_spec_is_checked():
    specs = [IMAGE, TensorSpec(name="mask", shape=[1, 8], dtype="uint8")]
    with pytest.raises(InputShapeError, match="graph 'x': missing input 'mask'"):
        check_inputs(specs, {"image": np.zeros((1, 3, 8, 8), np.float32)}, "graph 'x'")
    check_inputs(specs, {"image": np.zeros((2, 3, 8, 8), np.float32), "mask": np.zeros((1, 8), np.uint8)},
                 "x")

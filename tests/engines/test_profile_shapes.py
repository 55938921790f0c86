"""TensorRT optimisation profiles take their shapes from the graphs: a non-square input keeps its H x W."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_inspect.errors import EngineError
from engines.builder import _batch_profile


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)


def _network(*inputs):
    tensors = [SimpleNamespace(name=n, shape=s) for n, s in inputs]
    return SimpleNamespace(num_inputs=len(tensors), get_input=lambda i: tensors[i])


def test_non_square_inputs_keep_their_shape_in_the_batch_profile():
    builder = SimpleNamespace(create_optimization_profile=_Profile)
    net = _network(("image", (-1, 3, 64, 160)))
    profile = _batch_profile(None, builder, net, 8, Path("teacher1.onnx"))
    assert profile.shapes["image"] == ((1, 3, 64, 160), (8, 3, 64, 160), (8, 3, 64, 160))
    head = _network(("t1_32", (-1, 112, 2, 5)), ("t2_4", (-1, 24, 16, 40)))
    shapes = _batch_profile(None, builder, head, 4, Path("student2.onnx")).shapes
    assert shapes["t1_32"][2] == (4, 112, 2, 5) and shapes["t2_4"][0] == (1, 24, 16, 40)


def test_a_dynamic_height_or_width_is_refused():
    builder = SimpleNamespace(create_optimization_profile=_Profile)
    with pytest.raises(EngineError, match="fixed input size"):
        _batch_profile(None, builder, _network(("image", (-1, 3, -1, 160))), 1, Path("teacher1.onnx"))

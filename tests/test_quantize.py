"""``edge_inspect.quantize`` / ``edge-inspect quantize``: Q/DQ graphs of the tiny test model load in ONNX Runtime,
score within a stated tolerance of float, record their precision and calibration, and get thresholds set on
INT8 scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.cli import main
from edge_inspect.errors import ConfigError, ModelError
from edge_inspect.manifest import load_manifest, save_manifest, sha256_file
from edge_inspect.preprocess import preprocess
from edge_inspect.quantize import INT8, quantize
from tests.fixtures.tiny_model import grey_image, make_tiny_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

# Tolerance: |INT8 - float score| <= 1 % of the largest float score of the frames. 8-bit activations over the
# range calibrated on the goods resolve 1/255 of it per step; measured on these frames: 0.12 % (tiny) and
# 0.06 % (tiny-conv), so 1 % leaves room for other CPUs' kernels while a broken graph fails it.
SCORE_RTOL = 0.01


def _goods(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.clip(124 + rng.normal(0, 3) + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
        # a bright corner of varying size and level: the activation ranges must cover the frames scored below
        # (beyond its calibrated range an activation clips: a defect far brighter than any good scores lower)
        img[: 8 + i % 8, : 8 + i % 8] = 255 if i % 2 else 60
        cv2.imwrite(str(folder / f"good_{i:03d}.png"), img)
    return folder


def _conv_model(folder: Path) -> Path:
    """The tiny model with a 3→4 channel 3×3 convolution + ReLU in its features graph (weights to quantize
    per channel); its feature is the channel mean of the squared ReLU output."""
    from onnx import TensorProto, helper, numpy_helper

    make_tiny_model(folder)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([0.1, -0.1, 0.0, 0.2], np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Mul", ["r", "r"], ["r2"]),
        helper.make_node("ReduceMean", ["r2"], ["m"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["m"], ["feat"], kernel_shape=[4, 4], strides=[4, 4]),
    ]
    g = helper.make_graph(nodes, "features",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])],
                          [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["batch", 1, 16, 16])],
                          initializer=[w, b])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "features.onnx"))
    m = load_manifest(folder, verify_files=False)
    m.graph("features").sha256 = sha256_file(folder / "features.onnx")
    save_manifest(m, folder)
    return folder


def _frames(manifest):
    imgs = [grey_image(64), grey_image(64, blob=True), grey_image(64, value=100), grey_image(64, value=150)]
    return np.concatenate([preprocess(i, manifest.input) for i in imgs])


@pytest.fixture(scope="module")
def goods(tmp_path_factory):
    return _goods(tmp_path_factory.mktemp("goods"), 24, seed=1)


@pytest.mark.parametrize("make", [make_tiny_model, _conv_model], ids=["tiny", "tiny-conv"])
def test_qdq_graphs_load_in_onnxruntime_and_score_within_tolerance(make, goods, tmp_path):
    model = make(tmp_path / "float")
    files = sorted(goods.iterdir())
    r = quantize(model, files, "24 generated goods", tmp_path / "int8", graphs=("features", "head"), max_images=16)
    q = load_manifest(tmp_path / "int8")
    assert [g.precision for g in q.graphs] == [INT8, INT8] and q.precision == INT8
    assert q.quantization.calibration_count == 16 and q.quantization.calibration_source == "24 generated goods"
    assert "NOT set on INT8 scores" in q.quantization.thresholds
    assert q.schema_version == 4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "features.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fm = load_manifest(model)
    x = _frames(fm)
    with OnnxRuntimeBackend(model, fm) as fb, OnnxRuntimeBackend(tmp_path / "int8", q) as qb:
        assert qb.mode == "fused"
        f, g = fb.infer({"image": x}), qb.infer({"image": x})
    scale = float(np.abs(f["score"]).max())
    assert scale > 0
    np.testing.assert_allclose(g["score"], f["score"], atol=SCORE_RTOL * scale)
    assert not np.array_equal(g["score"], f["score"])  # it did change: these are not the float graphs
    assert np.argmax(g["score"]) == np.argmax(f["score"])
    assert r.max_abs_score_diff <= SCORE_RTOL * max(float(np.abs(r.float_scores).max()), 1e-6)


def test_an_older_float_manifest_gives_a_schema_4_int8_one(goods, tmp_path):
    model = make_tiny_model(tmp_path / "float")
    raw = json.loads((model / "manifest.json").read_text())
    raw["schema_version"] = 3
    (model / "manifest.json").write_text(json.dumps(raw))
    quantize(model, sorted(goods.iterdir()), "goods", tmp_path / "int8", graphs=("features",), max_images=4)
    assert json.loads((tmp_path / "int8" / "manifest.json").read_text())["schema_version"] == 4


def test_conv_weights_are_quantized_per_channel(goods, tmp_path):
    model = _conv_model(tmp_path / "float")
    quantize(model, sorted(goods.iterdir()), "goods", tmp_path / "int8", graphs=("features",), max_images=8)
    g = onnx.load(str(tmp_path / "int8" / "features.onnx")).graph
    inits = {t.name: t for t in g.initializer}
    weight_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] in
                 {c.input[1] for c in g.node if c.op_type == "Conv"}]
    assert len(weight_dq) == 1
    assert list(inits[weight_dq[0].input[1]].dims) == [4]  # one scale per output channel
    assert load_manifest(tmp_path / "int8").graph("head").precision == "fp32"  # not asked: stays float


def test_thresholds_are_set_on_int8_scores_of_the_threshold_goods(goods, tmp_path):
    model = _conv_model(tmp_path / "float")
    held_out = _goods(tmp_path / "held_out", 30, seed=7)
    quantize(model, sorted(goods.iterdir()), "goods", tmp_path / "int8", graphs=("features",),
             threshold_goods=(sorted(held_out.iterdir()), "30 held-out goods"))
    q = load_manifest(tmp_path / "int8")
    assert q.quantization.thresholds.startswith("set on INT8 scores of 30 held-out goods")
    assert q.calibration.good_scores.count == 30 and q.calibration.threshold_model.source == "30 held-out goods"
    assert q.calibration.image_threshold != load_manifest(model).calibration.image_threshold


def test_refusals(tiny_model_dir, goods, tmp_path):
    files = sorted(goods.iterdir())
    with pytest.raises(ConfigError, match="no graph named nope"):
        quantize(tiny_model_dir, files, "g", tmp_path / "a", graphs=("nope",))
    with pytest.raises(ConfigError, match="unknown calibration method"):
        quantize(tiny_model_dir, files, "g", tmp_path / "b", method="magic")
    quantize(tiny_model_dir, files, "g", tmp_path / "int8", graphs=("features",), max_images=4)
    with pytest.raises(ModelError, match="already mixed"):
        quantize(tmp_path / "int8", files, "g", tmp_path / "c", graphs=("head",))
    with pytest.raises(ConfigError, match="not empty"):
        quantize(tiny_model_dir, files, "g", tmp_path / "int8", graphs=("features",))


def test_cli_writes_an_int8_folder_and_says_what_it_did(tiny_model_dir, goods, tmp_path, capsys):
    rc = main(["quantize", "--model", str(tiny_model_dir), "--goods", str(goods), "--out", str(tmp_path / "q"),
               "--graphs", "features,head", "--max-images", "8"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "int8 Q/DQ features, head; float none" in out and "NOT set on INT8 scores" in out
    raw = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert raw["graphs"][0]["precision"] == INT8 and raw["quantization"]["calibration_method"] == "MinMax"
    assert main(["info", "--model", str(tmp_path / "q")]) == 0
    info = capsys.readouterr().out
    assert "int8-qdq]" in info and "quantized: onnxruntime quantize_static" in info
    assert "thresholds: carried over" in info
    assert main(["quantize", "--model", str(tiny_model_dir), "--goods", str(goods), "--out",
                 str(tmp_path / "q2"), "--graphs", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    for bad in ("features", "features=(unclosed"):
        assert main(["quantize", "--model", str(tiny_model_dir), "--goods", str(goods), "--out",
                     str(tmp_path / "q3"), "--graphs", "features", "--float-nodes", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--float-nodes" in err
    shutil.rmtree(tmp_path / "q")


def test_tensorrt_form_has_int8_activations_with_zero_point_zero(goods, tmp_path):
    from onnx import numpy_helper

    model = _conv_model(tmp_path / "float")
    quantize(model, sorted(goods.iterdir()), "goods", tmp_path / "int8", graphs=("features",), max_images=8,
             activations="s8-symmetric")
    g = onnx.load(str(tmp_path / "int8" / "features.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    zero_points = [inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert load_manifest(tmp_path / "int8").quantization.activations.startswith("int8 symmetric")
    with pytest.raises(ConfigError, match="unknown activation format"):
        quantize(model, sorted(goods.iterdir()), "goods", tmp_path / "x", activations="fp4")


def test_float_node_patterns_keep_matching_nodes_float_and_a_pattern_matching_nothing_keeps_the_graph(goods, tmp_path):
    model = _conv_model(tmp_path / "float")
    files = sorted(goods.iterdir())
    quantize(model, files, "goods", tmp_path / "kept", graphs=("features",), max_images=4,
             float_nodes={"features": r"^Conv"})
    q = load_manifest(tmp_path / "kept")
    graph = onnx.load(str(tmp_path / "kept" / "features.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(producer.get(n.input[1]) is None or producer[n.input[1]].op_type != "DequantizeLinear"
                         for n in convs)  # its weights stay float
    assert any("'^Conv'" in k for k in q.quantization.kept_float)
    quantize(model, files, "goods", tmp_path / "none", graphs=("features",), max_images=4,
             float_nodes={"features": "no such node"})
    q = load_manifest(tmp_path / "none")
    assert q.graph("features").precision == "fp32"
    assert any("no node matches" in k for k in q.quantization.kept_float)
    assert sha256_file(tmp_path / "none" / "features.onnx") == sha256_file(model / "features.onnx")

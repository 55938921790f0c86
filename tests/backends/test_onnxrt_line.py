"""The ONNX Runtime backend's line graph: one fused session cut to score + anomaly map gives the same score and
map as the full chain of graphs; diagnostics come only when asked for; a precision it cannot run is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_inspect.backends import line_graph
from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.cli import main
from edge_inspect.errors import ModelError
from edge_inspect.manifest import load_manifest
from edge_inspect.preprocess import preprocess
from tests.fixtures.tiny_model import add_global_output, grey_image

onnx = pytest.importorskip("onnx")


@pytest.fixture()
def fused_model(tiny_model_dir, tmp_path):
    """The tiny model with a diagnostic head output ('global_score', listed in extra_outputs)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    add_global_output(model)
    raw = json.loads((model / "manifest.json").read_text())
    raw["extra_outputs"] = ["global_score"]
    (model / "manifest.json").write_text(json.dumps(raw))
    return model


def _frames(manifest):
    imgs = [grey_image(64), grey_image(64, blob=True), grey_image(64, value=60)]
    return np.concatenate([preprocess(i, manifest.input) for i in imgs])


def test_line_graph_gives_the_full_chains_score_and_map(fused_model):
    m = load_manifest(fused_model)
    x = _frames(m)
    with OnnxRuntimeBackend(fused_model, m) as line, \
            OnnxRuntimeBackend(fused_model, m, fuse=False, diagnostics=True) as full:
        assert (line.mode, full.mode) == ("fused", "chain")
        got, ref = line.infer({"image": x}), full.infer({"image": x})
    assert set(got) == {"score", "anomaly_map"} and "global_score" in ref
    assert got["score"].max() > 10 * got["score"].min()  # the frames differ: the blob and the dark frame score high
    np.testing.assert_allclose(got["score"], ref["score"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["anomaly_map"], ref["anomaly_map"], rtol=1e-6, atol=1e-7)


def test_the_line_graph_runs_no_diagnostic_node_and_diagnostics_bring_them_back(fused_model):
    m = load_manifest(fused_model)
    lean = onnx.load_from_string(line_graph.line_graph_bytes(fused_model, m, ["score", "anomaly_map"]))
    assert [o.name for o in lean.graph.output] == ["score", "anomaly_map"]
    assert "ReduceMean" in {n.op_type for n in lean.graph.node}  # the features graph's own mean stays
    assert not any(o == "global_score" for n in lean.graph.node for o in n.output)
    x = _frames(m)
    with OnnxRuntimeBackend(fused_model, m, diagnostics=True) as diag, \
            OnnxRuntimeBackend(fused_model, m, fuse=False, diagnostics=True) as chain:
        assert diag.mode == "fused"
        got, ref = diag.infer({"image": x}), chain.infer({"image": x})
    assert set(got) == {"score", "anomaly_map", "global_score"}
    np.testing.assert_allclose(got["global_score"], ref["global_score"], rtol=1e-6)


def test_graphs_that_cannot_be_joined_run_as_a_chain(fused_model, monkeypatch, caplog):
    def refuse(*_):
        raise line_graph.CannotJoin("the onnx package is not installed")

    monkeypatch.setattr("edge_inspect.backends.onnxrt.line_graph_bytes", refuse)
    m = load_manifest(fused_model)
    with OnnxRuntimeBackend(fused_model, m) as be:
        out = be.infer({"image": _frames(m)})
    assert be.mode == "chain" and set(out) == {"score", "anomaly_map"}
    assert "running the graphs as a chain: the onnx package is not installed" in caplog.text


def test_a_precision_the_backend_cannot_run_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    raw = json.loads((model / "manifest.json").read_text())
    raw["graphs"][0]["precision"] = "fp8"
    (model / "manifest.json").write_text(json.dumps(raw))
    m = load_manifest(model)
    with pytest.raises(ModelError, match="graph 'features' has precision 'fp8', which the ONNX Runtime backend "
                       "cannot run") as info:
        OnnxRuntimeBackend(model, m).load()
    assert "\n" not in str(info.value)
    assert main(["bench", "--model", str(model), "--backend", "onnxruntime", "--frames", "10", "--rounds", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision 'fp8'" in err[0]


def test_a_corrupt_graph_is_the_chains_one_line_model_error(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    m = load_manifest(model)
    (model / "head.onnx").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ModelError, match="head.onnx: ONNX Runtime cannot load graph 'head'") as info:
        OnnxRuntimeBackend(model, m).load()
    assert "\n" not in str(info.value)

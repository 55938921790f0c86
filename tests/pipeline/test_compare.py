"""``edge-inspect bench --model A --compare B``: two model folders side by side (each in its own process, the
same frames, interleaved rounds), with latency and resident memory for each."""

from __future__ import annotations

import json

import pytest

from edge_inspect.cli import main
from edge_inspect.pipeline.compare import short_precision
from edge_inspect.quantize import quantize
from tests.test_quantize import _goods

pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(scope="module")
def int8_model(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    goods = _goods(tmp / "goods", 8, seed=3)
    return quantize(tiny_model_dir, sorted(goods.iterdir()), "8 goods", tmp / "tiny-int8",
                    graphs=("features",), max_images=8).out_dir


def test_float_and_int8_side_by_side_with_memory(tiny_model_dir, int8_model, capsys):
    assert main(["bench", "--model", str(tiny_model_dir), "--compare", str(int8_model), "--frames", "32",
                 "--rounds", "2", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "each model in its own process, the same frames, rounds interleaved" in out
    precision = next(line for line in out.splitlines() if line.startswith("precision"))
    assert precision.split()[1:] == ["fp32", "int8-qdq", "1/2", "graphs"]
    assert "resident MiB" in out and "peak resident MiB" in out
    assert "tiny-int8 / tiny_model0 median latency:" in out


def test_json_figures_per_model(tiny_model_dir, int8_model, capsys):
    assert main(["bench", "--model", str(tiny_model_dir), "--compare", str(int8_model), "--frames", "16",
                 "--rounds", "2", "--backend", "onnxruntime", "--json"]) == 0
    figs = json.loads(capsys.readouterr().out)
    assert [f["precision"] for f in figs] == ["fp32", "int8-qdq 1/2 graphs"]
    for f in figs:
        assert len(f["samples_ms"]) == 16 and f["median_ms"] > 0 and f["rss_mib"] > 10 and f["mode"] == "fused"
        assert f["peak_rss_mib"] >= f["rss_mib"]


def test_short_precision(tiny_model_dir, int8_model):
    from edge_inspect.manifest import load_manifest

    assert short_precision(load_manifest(tiny_model_dir)) == "fp32"
    assert short_precision(load_manifest(int8_model)) == "int8-qdq 1/2 graphs"


def test_a_model_that_cannot_load_is_one_line(tiny_model_dir, tmp_path, capsys):
    assert main(["bench", "--model", str(tiny_model_dir), "--compare", str(tmp_path / "nope"), "--frames", "16",
                 "--rounds", "2"]) == 1
    assert capsys.readouterr().err.count("\n") == 1

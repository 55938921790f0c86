"""benchmarks/gpu_latency.py, the torch GPU proxy, runs end to end on the CPU (small input, few runs) and labels
itself as a proxy; its figures on a GPU are not checked here (no timed unit tests)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_cpu_smoke_run_measures_every_network_and_the_chain(tmp_path, capsys):
    from benchmarks.gpu_latency import main

    out = tmp_path / "gpu.json"
    assert main(["--untrained", "edge", "--image-size", "32", "--device", "cpu", "--runs", "1", "--warmup", "0",
                 "--batch", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["label"] == "torch proxy, NOT a TensorRT figure" and res["runner"] == "eager"
    b1 = res["batches"]["1"]
    assert list(b1["per_network"]) == ["teacher1", "student1", "teacher2", "student2", "discriminator"]
    assert b1["outputs_finite"] and b1["end_to_end"]["median_ms"] > 0
    assert "NOT TensorRT" in capsys.readouterr().out


def test_without_cuda_it_says_so_and_measures_nothing(capsys, monkeypatch):
    import torch

    from benchmarks.gpu_latency import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--untrained", "edge"]) == 3
    assert "no CUDA device here: nothing measured" in capsys.readouterr().out

"""The throughput benchmark on the tiny model: it runs, counts every frame, and its CLI prints the table."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.camera.base import EndOfStream
from edge_inspect.cli import main
from edge_inspect.pipeline.bench import MemorySource, bench_images, rss_mib, run_bench


def test_memory_source_is_finite_and_contiguous():
    src = MemorySource(bench_images(20, 30, n=2), count=3)
    src.open()
    frames = [src.read() for _ in range(3)]
    assert [f.seq for f in frames] == [0, 1, 2] and frames[0].image.shape == (20, 30, 3)
    assert not np.array_equal(frames[0].image, frames[1].image)
    with pytest.raises(EndOfStream):
        src.read()


def test_run_bench_tiny_model(tiny_model_dir):
    r = run_bench(tiny_model_dir, frames=40, image_hw=(48, 80), rounds=2, warmup=2)
    assert r.counters["verdicts_out"] == 40 and r.counters["frames_in"] == 40 and r.counters["unknown"] == 0
    assert r.model_fps > 0 and r.pipeline_fps > 0 and r.ratio > 0
    assert 0 < r.model_p50_ms <= r.model_p99_ms and 0 < r.pipeline_total_p50_ms <= r.pipeline_total_p99_ms
    assert r.rss_mib > 10 and r.peak_rss_mib >= r.rss_mib and r.image_hw == (48, 80)
    table = r.table()
    assert "model only (infer)" in table and "pipeline / model-only throughput" in table


def test_rss_reads_proc():
    mem = rss_mib()
    assert mem["rss_mib"] > 1


def test_bench_cli(tiny_model_dir, capsys):
    assert main(["bench", "--model", str(tiny_model_dir), "--frames", "20", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "frames/s" in out and "20 frames in 1 rounds" in out
    assert main(["bench", "--model", str(tiny_model_dir), "--frames", "20", "--image-size", "big"]) == 2

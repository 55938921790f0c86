"""Short soak (the long one is benchmarks/soak.py): a real ``edge-inspect run`` process in lossless mode,
synthetic camera, ONNX Runtime, a subscriber on loopback. Every frame exactly one verdict, sequence
numbers contiguous, resident memory flat, latency p99 stable over windows."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak

FRAMES = 1500


@pytest.mark.slow
def test_short_soak_lossless_every_frame_one_verdict(tiny_model_dir, tmp_path):
    r = soak(FRAMES, tiny_model_dir, fps=0, size=64, window=500, workdir=tmp_path, timeout_s=120)
    assert r["exit_code"] == 0, r["stderr_tail"]
    assert not r["has_traceback"] and r["invalid_messages"] == 0
    s = r["summary"]
    assert (s["taken"], s["judged"], s["dropped_queue"], s["dropped_gap"], s["unknown"]) == (FRAMES, FRAMES, 0, 0, 0)
    # on the wire: exactly one verdict per frame, in order, message counter without holes
    assert r["verdicts_on_wire"] == FRAMES and r["duplicates"] == 0 and r["missing_seqs"] == []
    assert r["seq_contiguous"] and r["msg_seq_contiguous"]
    assert r["heartbeats"] >= 1
    # resident memory flat: no growth per frame (a leak of 1 KiB/frame would add ~1.5 MiB here)
    rss = r["rss_kib"]
    assert rss["end"] - rss["start"] < 8 * 1024, rss
    # latency stable: three windows, no window's p99 far above the others (loose: 2 shared CPU cores)
    assert len(r["latency_windows"]) == 3
    assert max(w["p99_ms"] for w in r["latency_windows"]) < 250.0, r["latency_windows"]

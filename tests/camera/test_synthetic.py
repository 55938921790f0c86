"""synthetic://: deterministic parts per (seed, seq), true defect type in meta, fps pacing, triggers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_inspect.camera.base import EndOfStream
from edge_inspect.camera.settings import CameraSettings
from edge_inspect.camera.synthetic import SyntheticSource
from edge_inspect.camera.uri import open_source
from edge_inspect.errors import CameraError


def _read_all(src, limit=100):
    frames = []
    with src:
        try:
            while len(frames) < limit:
                f = src.read(2.0)
                if f is not None:
                    frames.append(f)
        except EndOfStream:
            pass
    return frames


def test_same_seed_same_line_other_seed_other_line():
    a = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=12&seed=5&size=64&defect_rate=0.5")))
    b = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=12&seed=5&size=64&defect_rate=0.5")))
    c = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=12&seed=6&size=64&defect_rate=0.5")))
    assert [f.seq for f in a] == list(range(12))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert [f.meta["truth"] for f in a] == [f.meta["truth"] for f in b]
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    truths = {f.meta["truth"] for f in a}
    assert "good" in truths and truths - {"good"}, truths  # defect_rate 0.5 over 12 parts: both kinds
    assert all(f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8 for f in a)
    assert all((f.meta["defect_px"] > 0) == (f.meta["truth"] != "good") for f in a)


def test_frames_are_bgr_of_the_rendered_rgb():
    from edge_inspect.data.synth import render_part

    f = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=1&seed=9&size=64&defect_rate=0")))[0]
    # Re-render exactly as the source does (defect draw first, then the part) to compare channel order.
    rng = np.random.default_rng([9, 0])
    rng.random()
    rgb, _ = render_part(rng, 64, None)
    assert np.array_equal(f.image, rgb[:, :, ::-1])


def test_defect_rate_zero_and_one():
    good = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=6&size=64&defect_rate=0")))
    bad = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=6&size=64&defect_rate=1")))
    assert {f.meta["truth"] for f in good} == {"good"}
    assert {f.meta["truth"] for f in bad} <= {"scratch", "hole", "stain"} and len(bad) == 6


def test_fps_pacing_and_timestamps():
    frames = _read_all(open_source(CameraSettings(uri="synthetic://?fps=40&count=9&size=32")))
    dt = np.diff([f.t_capture for f in frames])
    assert frames[-1].t_capture - frames[0].t_capture == pytest.approx(8 / 40, abs=0.03)
    assert dt.min() > 0.8 / 40, dt  # never faster than fps
    assert all(abs(f.t_wall - time.time()) < 5 for f in frames)


def test_fps_zero_is_as_fast_as_possible():
    t = time.monotonic()
    frames = _read_all(open_source(CameraSettings(uri="synthetic://?fps=0&count=20&size=32")))
    assert len(frames) == 20 and time.monotonic() - t < 2.0


def test_read_times_out_between_slow_frames():
    src = SyntheticSource(fps=2.0, size=32)
    with src:
        assert src.read(1.0) is not None
        t = time.monotonic()
        assert src.read(0.1) is None  # next part is due in 0.5 s
        assert time.monotonic() - t == pytest.approx(0.1, abs=0.05)
        assert src.read(1.0).seq == 1


def test_skip_mode_makes_a_late_reader_see_gaps():
    src = SyntheticSource(fps=50.0, size=32, skip=True)
    with src:
        first = src.read(1.0)
        time.sleep(0.2)  # ~10 parts pass by
        late = src.read(1.0)
    assert late.seq - first.seq >= 8


def test_software_trigger_one_part_each_with_its_id():
    src = open_source(CameraSettings(uri="synthetic://?fps=0&size=32", trigger="software"))
    with src:
        assert src.read(0.05) is None
        src.trigger("P-1")
        src.trigger("P-2")
        got = [src.read(1.0), src.read(1.0)]
        assert src.read(0.05) is None
    assert [f.part_id for f in got] == ["P-1", "P-2"] and [f.seq for f in got] == [0, 1]


def test_free_run_refuses_triggers():
    src = open_source(CameraSettings(uri="synthetic://?fps=0&size=32"))
    with src, pytest.raises(CameraError, match="trigger"):
        src.trigger("P-1")

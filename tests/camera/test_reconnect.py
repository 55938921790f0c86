"""ReconnectingSource with a scripted live source: stale/black drops, stalls, one sequence across reopens."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_inspect.camera.base import Frame, FrameSource
from edge_inspect.camera.reconnect import ReconnectingSource
from edge_inspect.camera.settings import CameraSettings
from edge_inspect.errors import CameraError


class ScriptedCamera(FrameSource):
    """A live camera driven by a script: each read pops one step.

    Steps: ("img", value[, source_ts]) a frame filled with value; "none" a read timeout; "error" a
    lost camera. Each open starts its own raw seq at 0, like a real driver; ``fail_opens`` opens fail.
    """

    live = True
    trigger_mode = "free"
    nominal_fps = 100.0

    def __init__(self, steps, fail_opens=0, period=0.01):
        self.camera_id = "camS"
        self.steps = list(steps)
        self.fail_opens = fail_opens
        self.period = period
        self.opens = self.closes = 0
        self.is_open = False
        self.raw_seq = 0
        self.t = time.monotonic()

    def open(self):
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise CameraError("scripted: camera not answering")
        self.opens += 1
        self.is_open = True
        self.raw_seq = 0

    def close(self):
        self.closes += 1
        self.is_open = False

    def read(self, timeout=1.0):
        assert self.is_open, "read on a closed raw source"
        if not self.steps:
            time.sleep(min(timeout, 0.01))
            return None
        step = self.steps.pop(0)
        if step == "none":
            time.sleep(min(timeout, 0.01))
            return None
        if step == "error":
            raise CameraError("scripted: stream ended")
        if step == "gap":  # the driver itself skipped a frame
            self.raw_seq += 1
            return self.read(timeout)
        value = step[1]
        self.t += self.period
        meta = {"source_ts": step[2]} if len(step) > 2 else {}
        img = np.full((8, 8), value, np.uint8)
        img[0, 0] = 255 if value else 0  # content identity is the point, not brightness
        f = Frame(self.camera_id, self.raw_seq, self.t, time.time(), img, meta=meta)
        self.raw_seq += 1
        return f


def _settings(**kw):
    base = dict(reconnect_initial_s=0.01, reconnect_max_s=0.04, stall_timeout_s=0.3, black_level=4)
    base.update(kw)
    return CameraSettings(**base)


def _drain(src, n, timeout=1.0, tries=200):
    out, errors = [], 0
    for _ in range(tries):
        if len(out) >= n:
            break
        try:
            f = src.read(timeout)
        except CameraError:
            errors += 1
            continue
        if f is not None:
            out.append(f)
    return out, errors


def test_stale_and_black_frames_are_dropped_counted_and_leave_gaps():
    raw = ScriptedCamera([("img", 10), ("img", 10), ("img", 11, 5.0), ("img", 12, 5.0), ("img", 0), ("img", 13)])
    src = ReconnectingSource(raw, _settings())
    src.open()
    frames, _ = _drain(src, 3)
    assert [int(f.image[1, 1]) for f in frames] == [10, 11, 13]
    # seq 1 (repeated content), 3 (repeated source timestamp), 4 (black) were used up: gaps
    assert [f.seq for f in frames] == [0, 2, 5]
    st = src.status()
    assert (st["stale_dropped"], st["black_dropped"], st["frames"]) == (2, 1, 3)


def test_drop_rules_can_be_switched_off():
    raw = ScriptedCamera([("img", 10), ("img", 10), ("img", 0)])
    src = ReconnectingSource(raw, _settings(drop_repeated=False, black_level=None))
    src.open()
    frames, _ = _drain(src, 3)
    assert [f.seq for f in frames] == [0, 1, 2]


def test_sixteen_bit_black_uses_the_scaled_level():
    class Mono16(ScriptedCamera):
        def read(self, timeout=1.0):
            f = super().read(timeout)
            if f is not None:
                f.image = f.image.astype(np.uint16) * 4  # 0..1020 of 65535: black at level 4 (= 1028)
            return f

    src = ReconnectingSource(Mono16([("img", 100), ("img", 101)]), _settings())
    src.open()
    assert src.read(0.05) is None and src.read(0.05) is None
    assert src.status()["black_dropped"] == 2


def test_lost_camera_reconnects_and_the_sequence_continues_with_a_gap():
    steps = [("img", 20 + i) for i in range(3)] + ["error"] + [("img", 40 + i) for i in range(3)]
    raw = ScriptedCamera(steps, period=0.01)
    src = ReconnectingSource(raw, _settings())
    src.open()
    before, _ = _drain(src, 3)
    with pytest.raises(CameraError, match="stream ended"):
        src.read(0.2)
    assert src.state == "reconnecting" and not raw.is_open
    raw.fail_opens = 2  # the camera answers on the third try
    raw.t += 0.05  # 50 ms outage at 100 fps: ~4 frames missed
    after, errors = _drain(src, 3)
    assert errors == 2  # each failed attempt is reported
    assert src.state == "connected" and raw.opens == 2
    seqs = [f.seq for f in before + after]
    assert seqs[:3] == [0, 1, 2] and seqs[4:] == [seqs[3] + 1, seqs[3] + 2]
    assert seqs[3] - seqs[2] - 1 >= 1  # the outage is a counted gap
    st = src.status()
    assert st["reconnects"] == 1 and st["failed_opens"] == 2 and st["errors"] == 1
    assert st["lost_in_outages"] == seqs[3] - seqs[2] - 1


def test_backoff_doubles_up_to_the_maximum():
    raw = ScriptedCamera([("img", 1), "error"])
    src = ReconnectingSource(raw, _settings(reconnect_initial_s=0.02, reconnect_max_s=0.08))
    src.open()
    src.read(0.1)
    with pytest.raises(CameraError):
        src.read(0.1)
    raw.fail_opens = 100
    attempts = []
    t_end = time.monotonic() + 0.5
    while time.monotonic() < t_end:
        try:
            src.read(0.01)
        except CameraError:
            attempts.append(time.monotonic())
    gaps = np.diff(attempts)
    assert len(attempts) >= 4
    assert gaps[0] == pytest.approx(0.04, abs=0.02) and gaps[-1] == pytest.approx(0.08, abs=0.025), gaps


def test_pipeline_style_close_open_keeps_one_sequence():
    raw = ScriptedCamera([("img", 1), ("img", 2), "error", ("img", 3), ("img", 4)])
    src = ReconnectingSource(raw, _settings())
    src.open()
    a, _ = _drain(src, 2)
    with pytest.raises(CameraError):
        src.read(0.1)
    src.close()  # what the pipeline does after a read error
    src.open()
    b, _ = _drain(src, 2)
    seqs = [f.seq for f in a + b]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[2] > seqs[1] + 1
    assert src.status()["reconnects"] == 1


def test_stall_without_new_frames_counts_as_lost():
    raw = ScriptedCamera([("img", 1)] + [("img", 1)] * 100)  # then only repeats of the same picture
    src = ReconnectingSource(raw, _settings(stall_timeout_s=0.15))
    src.open()
    assert src.read(0.1) is not None
    t = time.monotonic()
    with pytest.raises(CameraError, match="no new frame"):
        for _ in range(100):
            src.read(0.05)
    assert 0.12 < time.monotonic() - t < 0.6
    assert src.state == "reconnecting" and src.status()["stale_dropped"] > 0


def test_trigger_while_reconnecting_is_refused_with_the_part_id():
    raw = ScriptedCamera(["error"])
    src = ReconnectingSource(raw, _settings())
    src.open()
    with pytest.raises(CameraError):
        src.read(0.1)
    with pytest.raises(CameraError, match="P-77"):
        src.trigger("P-77")


def test_first_open_failure_is_raised_not_hidden():
    src = ReconnectingSource(ScriptedCamera([], fail_opens=1), _settings())
    with pytest.raises(CameraError, match="not answering"):
        src.open()
    assert src.state == "closed" and src.status()["failed_opens"] == 1
    with pytest.raises(CameraError, match="not open"):
        src.read(0.01)


# ---- one owner: reconnect promptly, count every gap once, declared features ----------------------------


class ProbedCamera(ScriptedCamera):
    """A camera that can be probed cheaply (like an RTSP server's TCP port): ``down`` makes both the probe
    and open fail, as an unplugged camera would."""

    def __init__(self, steps, **kw):
        super().__init__(steps, **kw)
        self.down = False
        self.probes = 0

    def probe(self):
        self.probes += 1
        return not self.down

    def open(self):
        if self.down:
            raise CameraError("scripted: connection refused")
        super().open()


def test_a_camera_that_is_back_is_reopened_at_the_next_probe_not_the_next_backoff_slot():
    raw = ProbedCamera([("img", 1), "error"] + [("img", 10 + i) for i in range(50)])
    # back-off long enough that a pure back-off schedule would wait ~3.2 s after an 0.8 s outage
    src = ReconnectingSource(raw, _settings(reconnect_initial_s=0.4, reconnect_max_s=3.2, reconnect_probe_s=0.05))
    src.open()
    assert src.read(0.1) is not None
    raw.down = True
    with pytest.raises(CameraError):
        src.read(0.1)
    t_lost = time.monotonic()
    errors = 0
    while time.monotonic() - t_lost < 0.8:  # down: probes say so, no open attempt is wasted on it
        try:
            assert src.read(0.05) is None
        except CameraError:
            errors += 1
    assert errors == 0 and raw.opens == 1 and raw.probes >= 5
    raw.down = False
    t_back = time.monotonic()
    frame = None
    while frame is None and time.monotonic() - t_back < 5:
        frame = src.read(0.05)
    delay = time.monotonic() - t_back
    assert frame is not None and delay < 0.3, delay  # one probe interval plus the open, not 3.2 s
    assert src.status()["reconnects"] == 1 and src.state == "connected"


def test_a_camera_without_a_probe_keeps_the_backoff_schedule():
    raw = ScriptedCamera([("img", 1), "error", ("img", 2)])
    src = ReconnectingSource(raw, _settings(reconnect_initial_s=0.3, reconnect_max_s=0.3))
    src.open()
    src.read(0.1)
    with pytest.raises(CameraError):
        src.read(0.1)
    t = time.monotonic()
    frame = None
    while frame is None:
        frame = src.read(0.05)
    assert 0.25 < time.monotonic() - t < 0.6


def test_first_open_may_wait_a_while_but_not_for_ever():
    src = ReconnectingSource(ScriptedCamera([("img", 1)], fail_opens=2), _settings(reconnect_initial_s=0.05))
    src.open(wait_s=2.0)  # the camera answers on the third try
    assert src.state == "connected" and src.status()["failed_opens"] == 2
    never = ReconnectingSource(ScriptedCamera([], fail_opens=1000), _settings(reconnect_initial_s=0.05))
    t = time.monotonic()
    with pytest.raises(CameraError, match="not answering"):
        never.open(wait_s=0.3)
    assert 0.25 < time.monotonic() - t < 1.0 and never.state == "closed"


def test_interrupt_ends_a_reconnect_wait_at_once():
    raw = ScriptedCamera([("img", 1), "error"])
    src = ReconnectingSource(raw, _settings(reconnect_initial_s=5.0, reconnect_max_s=5.0))
    src.open()
    src.read(0.1)
    with pytest.raises(CameraError):
        src.read(0.1)
    import threading

    threading.Timer(0.1, src.interrupt).start()
    t = time.monotonic()
    assert src.read(3.0) is None
    assert time.monotonic() - t < 0.5


def test_lost_and_back_events_reach_listeners_with_the_reason():
    raw = ScriptedCamera([("img", 1), "error", ("img", 2)])
    src = ReconnectingSource(raw, _settings())
    events = []
    src.add_listener(lambda state, error: events.append((state, error)))
    src.open()
    _drain(src, 2)
    src.close()
    assert [s for s, _ in events] == ["connected", "reconnecting", "connected", "closed"]
    assert events[1][1] == "scripted: stream ended"


def test_gaps_are_counted_once_in_the_wrapper_including_stale_black_and_outage():
    steps = [("img", 10), ("img", 10), "gap", ("img", 11), ("img", 0), ("img", 12), "error", ("img", 13)]
    src = ReconnectingSource(ScriptedCamera(steps), _settings())
    src.open()
    frames, _ = _drain(src, 4)
    seqs = [f.seq for f in frames]
    st = src.status()
    # every number below the last delivered one is a delivered frame or exactly one counted gap
    assert st["gaps"] == seqs[-1] + 1 - len(frames)
    assert st["gaps"] >= st["stale_dropped"] + st["black_dropped"] + st["lost_in_outages"] + 1  # + the driver's gap


def test_a_source_without_the_declared_interface_is_refused_by_name():
    class NotASource:
        camera_id = "x"

        def read(self, timeout=1.0):
            return None

    with pytest.raises(TypeError, match="open.*close.*trigger.*live.*recorded.*probe"):
        ReconnectingSource(NotASource())


def test_every_source_implements_the_declared_features():
    from edge_inspect.camera.base import CameraSource, SourceFeatures
    from edge_inspect.camera.files import DirSource
    from edge_inspect.camera.synthetic import SyntheticSource

    for src in (ScriptedCamera([]), SyntheticSource(), ReconnectingSource(SyntheticSource())):
        assert isinstance(src, CameraSource) and isinstance(src, SourceFeatures)
    assert DirSource.recorded and not SyntheticSource.recorded and ScriptedCamera.live

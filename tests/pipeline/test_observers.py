"""Result observers: each published part is offered once, by reference (no copy), with the label as published;
a slow or failing observer costs the line nothing."""

from __future__ import annotations

import threading
import time

from edge_inspect.pipeline.observers import ObserverWorker
from edge_inspect.pipeline.runner import Pipeline
from tests.pipeline.fakes import RecordingPublisher, ScriptedSource, grey
from tests.pipeline.test_runner import backend, settings

OK_IMG = grey(120, 200)
NG_IMG = grey(120, 200, blob=True)


class Recorder:
    name = "recorder"

    def __init__(self):
        self.results = []

    def offer(self, result):
        self.results.append(result)

    def stats(self):
        return {"offered": len(self.results)}


class Slow(ObserverWorker):
    name = "slow"

    def handle(self, result):
        time.sleep(0.2)


class Refusing:
    name = "refusing"

    def offer(self, result):
        raise RuntimeError("broken observer")

    def stats(self):
        return {}


def test_every_published_part_is_offered_by_reference(tiny_model_dir):
    rec = Recorder()
    src = ScriptedSource([OK_IMG, NG_IMG], count=20)
    p = Pipeline(src, backend(tiny_model_dir), RecordingPublisher(), settings(mode="lossless"), observers=[rec])
    p.start()
    assert p.wait(20)
    assert [r.verdict.seq for r in rec.results] == list(range(20))
    assert [r.label for r in rec.results] == ["ok", "ng"] * 10
    first = rec.results[1]
    assert first.frame.image is NG_IMG  # the camera's array itself: nothing copied for observers
    assert first.camera_id == "cam-test" and first.anomaly_map.shape == (64, 64)
    assert first.verdict.heatmap is None  # pipeline.heatmap is off: the observer normalises in its own thread
    heat = first.heatmap()
    assert heat.shape == (64, 64) and 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0.5
    assert first.status()["counters"]["verdicts_out"] == 20
    assert p.status()["observers"] == {"recorder": {"offered": 20}}


def test_unknown_parts_have_no_map(tiny_model_dir):
    rec = Recorder()
    src = ScriptedSource([OK_IMG, grey(0, 0)], count=4)
    p = Pipeline(src, backend(tiny_model_dir), RecordingPublisher(), settings(mode="lossless"), observers=[rec])
    p.start()
    assert p.wait(20)
    assert [r.label for r in rec.results] == ["ok", "unknown"] * 2
    assert rec.results[1].anomaly_map is None and rec.results[1].heatmap() is None


def test_slow_and_failing_observers_cost_no_part(tiny_model_dir):
    slow = Slow()  # latest-slot: 0.2 s per part, far slower than the line
    slow.start()
    n = 60
    src = ScriptedSource([OK_IMG, NG_IMG], count=n)
    pub = RecordingPublisher()
    p = Pipeline(src, backend(tiny_model_dir), pub, settings(mode="lossless"), observers=[slow, Refusing()])
    t0 = time.monotonic()
    p.start()
    assert p.wait(20)
    elapsed = time.monotonic() - t0
    slow.close()
    assert len(pub.verdicts) == n and p.summary()["counters"]["verdicts_out"] == n
    assert elapsed < 0.2 * n / 4  # nowhere near the observer's pace
    s = slow.stats()
    assert s["offered"] == n and s["handled"] + s["skipped"] == n and s["skipped"] > n // 2


def test_bounded_queue_counts_drops_and_close_finishes_queued_work():
    done = []
    gate = threading.Event()

    class Gated(ObserverWorker):
        name = "gated"

        def handle(self, result):
            gate.wait(5)
            done.append(result)

    class Fake:
        class verdict:  # the one attribute the worker logs
            seq = 0

    w = Gated(queue_size=2)
    w.start()
    for _ in range(6):
        w.offer(Fake)
    gate.set()
    w.close()
    s = w.stats()
    assert s["offered"] == 6 and s["dropped"] + s["handled"] == 6 and s["dropped"] >= 3
    assert len(done) == s["handled"]


def test_worker_thread_runs_nicer_than_the_line():
    import os

    seen = []

    class Probe(ObserverWorker):
        name = "probe"

        def handle(self, result):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    class Fake:
        class verdict:  # the one attribute the worker logs
            seq = 0

    w = Probe()
    w.start()
    w.offer(Fake)
    w.close()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == [min(19, base + 10)]


def test_a_letterboxed_models_map_reaches_observers_in_the_frames_geometry(tiny_model_dir, tmp_path):
    import shutil

    from edge_inspect.manifest import load_manifest, save_manifest

    model_dir = tmp_path / "letterbox"
    shutil.copytree(tiny_model_dir, model_dir)
    m = load_manifest(model_dir)
    save_manifest(m.model_copy(update={"input": m.input.model_copy(update={"fit": "letterbox"})}), model_dir)
    rec = Recorder()
    src = ScriptedSource([OK_IMG, NG_IMG], count=4)  # 120 x 200 frames into a 64 x 64 input: padded above and below
    p = Pipeline(src, backend(model_dir), RecordingPublisher(), settings(mode="lossless"), observers=[rec])
    p.start()
    assert p.wait(20)
    h, w = rec.results[1].anomaly_map.shape
    assert w == 64 and abs(h / w - 120 / 200) < 0.05  # padding cropped off: the map has the part's aspect
    assert rec.results[1].heatmap().shape == (h, w)

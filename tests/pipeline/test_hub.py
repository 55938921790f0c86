"""The inference hub: batched = unbatched scores, one model per folder, no wait for a lone camera,
one frame per camera per batch, a failing frame charged to itself."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from edge_inspect.backends.base import Backend
from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.hub import InferenceHub


def ort_factory(calls: list | None = None):
    def make(model_dir, manifest):
        if calls is not None:
            calls.append(model_dir)
        return OnnxRuntimeBackend(model_dir, manifest)

    return make


class SpyBackend(Backend):
    """Records each call's batch size; sleeps ``delay_s``; refuses any batch holding a frame set to -999."""

    name = "spy"

    def __init__(self, model_dir, manifest, delay_s: float = 0.0):
        super().__init__(model_dir, manifest)
        self.delay_s, self.sizes, self.closed = delay_s, [], False

    def load(self):
        pass

    def infer(self, inputs):
        x = next(iter(inputs.values()))
        self.sizes.append(x.shape[0])
        time.sleep(self.delay_s)
        if (x == -999).any():
            raise RuntimeError("poisoned frame")
        return {"score": x.reshape(x.shape[0], -1).mean(axis=1), "anomaly_map": x[:, :1]}

    def close(self):
        self.closed = True


def frames(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(0, 1 + i, (1, 3, size, size)).astype(np.float32) for i in range(n)]


def submit_together(backends, xs, name="image"):
    """Each backend infers its frame from its own thread, all released at once; the outputs in order."""
    out = [None] * len(xs)
    go = threading.Barrier(len(xs))

    def work(i):
        go.wait()
        out[i] = backends[i].infer({name: xs[i]})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_batched_and_unbatched_give_the_same_scores(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    xs = frames(4)
    with OnnxRuntimeBackend(tiny_model_dir, manifest) as alone:
        single = [alone.infer({"image": x}) for x in xs]
        stacked = alone.infer({"image": np.concatenate(xs)})
    hub = InferenceHub(ort_factory(), max_wait_s=2.0)  # long enough for the 4 threads to line up
    try:
        backends = [hub.backend(f"cam{i}", tiny_model_dir, manifest) for i in range(4)]
        for b in backends:
            b.load()
        out = submit_together(backends, xs)
        (model,) = hub.models()
        assert model["images"] == 4 and model["batches"] == 1, "the four frames ran as one batch"
    finally:
        hub.close()
    for i, (o, s) in enumerate(zip(out, single, strict=True)):
        assert o.keys() == s.keys()
        assert o["score"].shape == (1,) and o["anomaly_map"].shape == s["anomaly_map"].shape
        np.testing.assert_allclose(o["score"], s["score"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(o["anomaly_map"], s["anomaly_map"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(o["score"], stacked["score"][i : i + 1], rtol=1e-5, atol=1e-6)
    assert len({float(s["score"][0]) for s in single}) == 4  # four different frames, not one score copied


def test_one_loaded_model_per_folder_closed_by_the_last_camera(tiny_model_dir, tmp_path):
    from tests.fixtures.tiny_model import make_tiny_model

    other = make_tiny_model(tmp_path / "other", reference=0.5)
    calls = []
    hub = InferenceHub(ort_factory(calls), max_wait_s=0.0)
    try:
        a = hub.backend("a", tiny_model_dir, load_manifest(tiny_model_dir))
        b = hub.backend("b", tiny_model_dir, load_manifest(tiny_model_dir))
        c = hub.backend("c", other, load_manifest(other))
        for be in (a, b, c):
            be.load()
        assert len(calls) == 2  # a and b share one session
        assert sorted(m["cameras"] == ["a", "b"] or m["cameras"] == ["c"] for m in hub.models()) == [True, True]
        x = frames(1)[0]
        assert a.infer({"image": x})["score"] != c.infer({"image": x})["score"]  # a different model, really
        a.close()
        assert len(hub.models()) == 2 and b.infer({"image": x})["score"].shape == (1,)  # b still has it
        b.close()
        assert [m["cameras"] for m in hub.models()] == [["c"]]
        # a reload of a folder whose files changed loads it again instead of sharing the stale session
        d = hub.backend("c", other, load_manifest(other))
        d.load()
        assert len(calls) == 2
        manifest_file = other / "manifest.json"
        os.utime(manifest_file, ns=(time.time_ns(), time.time_ns() + 10**9))
        e = hub.backend("c", other, load_manifest(other))
        e.load()
        assert len(calls) == 3
    finally:
        hub.close()


def test_a_lone_camera_never_waits_for_a_batch(tiny_model_dir):
    spy = {}

    def make(model_dir, manifest):
        spy["be"] = SpyBackend(model_dir, manifest)
        return spy["be"]

    hub = InferenceHub(make, max_wait_s=5.0)
    try:
        be = hub.backend("only", tiny_model_dir, load_manifest(tiny_model_dir))
        be.load()
        t0 = time.monotonic()
        for x in frames(3):
            be.infer({"image": x})
        assert time.monotonic() - t0 < 2.0  # not 3 × 5 s: nobody else shares the model
    finally:
        hub.close()
    assert spy["be"].sizes == [1, 1, 1] and spy["be"].closed


def test_a_fast_camera_cannot_starve_a_slow_one(tiny_model_dir):
    """Camera 'fast' submits back to back from 3 threads; 'slow' submits once now and then: every batch
    holds at most one frame per camera, and each of the slow camera's frames is in the next batch."""
    spy = {}

    def make(model_dir, manifest):
        spy["be"] = SpyBackend(model_dir, manifest, delay_s=0.01)
        return spy["be"]

    hub = InferenceHub(make, max_wait_s=0.001)
    manifest = load_manifest(tiny_model_dir)
    stop = threading.Event()
    fast = [hub.backend("fast", tiny_model_dir, manifest) for _ in range(3)]  # one camera, 3 callers
    slow = hub.backend("slow", tiny_model_dir, manifest)
    for b in (*fast, slow):
        b.load()
    x = frames(1)[0]

    def hammer(b):
        while not stop.is_set():
            b.infer({"image": x})

    threads = [threading.Thread(target=hammer, args=(b,), daemon=True) for b in fast]
    for t in threads:
        t.start()
    waits = []
    try:
        time.sleep(0.05)
        for _ in range(10):
            t0 = time.monotonic()
            slow.infer({"image": x})
            waits.append(time.monotonic() - t0)
            time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        hub.close()
    assert max(spy["be"].sizes) <= 2  # never two frames of the same camera in one batch
    # at worst the batch in progress, then its own: about 2 × 10 ms (generous for a loaded CI machine)
    assert sorted(waits)[len(waits) // 2] < 0.1


def test_a_failing_frame_fails_alone(tiny_model_dir):
    hub = InferenceHub(lambda d, m: SpyBackend(d, m), max_wait_s=2.0)
    try:
        manifest = load_manifest(tiny_model_dir)
        backends = [hub.backend(f"cam{i}", tiny_model_dir, manifest) for i in range(3)]
        for b in backends:
            b.load()
        xs = frames(3)
        xs[1] = np.full_like(xs[1], -999)
        results = [None] * 3

        def work(i, go):
            go.wait()
            try:
                results[i] = backends[i].infer({"image": xs[i]})
            except RuntimeError as exc:
                results[i] = exc

        go = threading.Barrier(3)
        threads = [threading.Thread(target=work, args=(i, go)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        hub.close()
    assert isinstance(results[1], RuntimeError) and "poisoned" in str(results[1])
    for i in (0, 2):
        np.testing.assert_allclose(results[i]["score"], xs[i].mean(), rtol=1e-5)


def test_closed_hub_refuses_new_frames(tiny_model_dir):
    from edge_inspect.errors import BackendError

    hub = InferenceHub(lambda d, m: SpyBackend(d, m))
    be = hub.backend("a", tiny_model_dir, load_manifest(tiny_model_dir))
    be.load()
    hub.close()
    with pytest.raises(BackendError, match="closed"):
        be.infer({"image": frames(1)[0]})


def test_auto_batch_limit_is_one_on_onnxruntime_and_eight_elsewhere(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    for factory, limit in ((ort_factory(), 1), (lambda d, m: SpyBackend(d, m), 8)):
        hub = InferenceHub(factory, max_wait_s=0.0, max_batch=None)
        try:
            hub.backend("a", tiny_model_dir, manifest).load()
            assert hub.models()[0]["max_batch"] == limit
        finally:
            hub.close()

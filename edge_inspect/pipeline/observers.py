"""Result observers: who else sees each published part (live view, defect archive, local window).

The decide thread calls ``ObserverWorker.offer(result)`` once per published verdict; ``offer`` only hands
a reference over (O(1), never waits, never copies), and each observer does its work (overlays, JPEG/PNG
encoding, disk, network) in its own thread. What an observer cannot keep up with is dropped and counted
there, never by slowing the line.

Nothing is copied for observers on the hot path: ``PartResult`` holds the camera frame and the raw anomaly
map the pipeline already has (the backends return fresh arrays per call and the camera sources fresh
images per frame), and with no observer attached the pipeline builds no PartResult at all. Observers must
treat the arrays as read-only. The heat map is normalised (``heatmap()``) in the observer's thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..camera.base import Frame
from ..decision import Thresholds, normalise
from ..manifest import Calibration
from ..verdict import Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartResult:
    """One published part, as an observer gets it (read-only references, nothing copied).

    frame        the camera frame: image (H, W, 3) uint8 BGR or (H, W) mono, as captured.
    verdict      the verdict handed to the publisher; ``label`` is the label the publisher sent.
    anomaly_map  (h, w) float32 raw map (map units) at model resolution, in the frame's geometry (letterbox
                 padding cropped, tiles stitched: preprocess.restore_outputs), or None (unknown verdict).
    status       the pipeline's ``status()`` (counters, fps, camera, model): call it from the observer's
                 thread, at the observer's pace (a full snapshot computes percentiles: not per part).
    """

    camera_id: str
    frame: Frame
    verdict: Verdict
    label: str
    anomaly_map: np.ndarray | None
    thresholds: Thresholds
    calibration: Calibration
    status: Callable[[], dict]

    def heatmap(self) -> np.ndarray | None:
        """(h, w) float32 in [0, 1], the pixel threshold at 0.5 (as ``decide`` makes it); None without a map."""
        if self.verdict.heatmap is not None:
            return self.verdict.heatmap
        if self.anomaly_map is None:
            return None
        amap = np.nan_to_num(np.asarray(self.anomaly_map, np.float32), nan=0.0)
        return np.asarray(normalise(amap, self.thresholds.pixel, self.calibration, is_map=True), np.float32)


class ObserverWorker:
    """Base of an observer with its own thread: ``offer`` queues a PartResult without waiting, ``handle``
    (the subclass's) runs in the worker thread.

    queue_size None: a latest-slot (a newer result replaces one not yet taken; counted as ``skipped``,
    which is how a view samples the line); an int: a bounded FIFO whose overflow is ``dropped``.
    Counters: offered, handled, skipped, dropped, errors (``handle`` raised; logged, the worker goes on);
    ``stats()`` adds ``queued`` and ``cpu_s`` (the worker thread's CPU time spent in ``handle``).
    """

    name = "observer"
    # The worker thread runs this much nicer than the line (Linux: per-thread nice), so on a saturated CPU
    # the scheduler gives inference the cores first; an observer that falls behind drops, counted.
    nice_increment = 10

    def __init__(self, queue_size: int | None = None):
        self._queue: queue.Queue | None = queue.Queue(queue_size) if queue_size is not None else None
        self._slot: PartResult | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.counters = {"offered": 0, "handled": 0, "skipped": 0, "dropped": 0, "errors": 0}
        self._thread: threading.Thread | None = None
        self._cpu_s = 0.0  # CPU time of the worker thread in handle(): what this observer costs the station

    # ---- decide thread ----------------------------------------------------------------------

    def wants(self, result: PartResult) -> bool:
        """Cheap filter run on the decide thread before queueing (e.g. the archive's OK sample)."""
        return True

    def offer(self, result: PartResult) -> None:
        """Hand ``result`` over in O(1); never blocks. Safe from one producer thread."""
        self.counters["offered"] += 1
        if not self.wants(result):
            return
        if self._queue is None:
            if self._slot is not None:
                self.counters["skipped"] += 1
            self._slot = result
            self._wake.set()
            return
        try:
            self._queue.put_nowait(result)
        except queue.Full:
            self.counters["dropped"] += 1

    # ---- worker thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"edge-inspect-{self.name}", daemon=True)
        self._thread.start()

    def _take(self, timeout: float) -> PartResult | None:
        if self._queue is not None:
            try:
                return self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
        if not self._wake.wait(timeout):
            return None
        self._wake.clear()
        result, self._slot = self._slot, None
        return result

    def _lower_priority(self) -> None:
        if not self.nice_increment or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice_increment))
        except OSError as exc:  # not allowed or not supported: the observer still works, only less politely
            log.debug("%s: cannot lower the thread's priority: %s", self.name, exc)

    def _loop(self) -> None:
        self._lower_priority()
        while True:
            result = self._take(0.1)
            if result is None:
                if self._stop.is_set():
                    break
                self.idle()
                continue
            t0 = time.thread_time()
            try:
                self.handle(result)
                self.counters["handled"] += 1
            except Exception:  # an observer failure is counted and logged, the line goes on
                self.counters["errors"] += 1
                if self.counters["errors"] <= 5 or self.counters["errors"] % 100 == 0:
                    log.exception("%s: handling part %d failed (%d so far)", self.name, result.verdict.seq,
                                  self.counters["errors"])
            self._cpu_s += time.thread_time() - t0
            self.after(result)
        self.finish()

    def handle(self, result: PartResult) -> None:
        raise NotImplementedError

    def after(self, result: PartResult) -> None:
        """Called after each handled result (pacing, e.g. a view's frame-rate cap)."""

    def idle(self) -> None:
        """Called when nothing arrived for a while (housekeeping)."""

    def finish(self) -> None:
        """Called once in the worker thread after the last result (close files, sockets)."""

    def stats(self) -> dict:
        """The counters plus the queue depth, for status and heartbeats."""
        out = dict(self.counters)
        out["queued"] = self._queue.qsize() if self._queue is not None else int(self._slot is not None)
        out["cpu_s"] = round(self._cpu_s, 3)
        return out

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (up to ``timeout`` s), then stop the worker thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:  # never started (run failed before): release what it holds
            self.finish()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: still busy after %.0f s at close; left behind", self.name, timeout)

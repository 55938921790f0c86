"""A latest-slot per camera, drawn at most ``fps`` times a second per camera: how the live view and the local
window sample a station's cameras.

One slot for the whole station would let a fast free-running camera replace a slow (triggered) camera's
part before it is ever drawn; here each camera has its own slot, and the worker takes the camera that has
waited longest among those whose frame period has passed. A part replaced in its slot before it was drawn
is counted as ``skipped`` (the sampling), as with one slot.
"""

from __future__ import annotations

import threading
import time

from ..pipeline.observers import ObserverWorker, PartResult


class PerCameraLatest(ObserverWorker):
    """ObserverWorker with one latest-slot per ``camera_id``, paced to ``fps`` per camera (subclasses set it).

    ``offer`` takes a lock (cheap): it is also what subclasses extend to keep per-part rings (trend, NG).
    """

    fps: float = 5.0

    def __init__(self):
        super().__init__(queue_size=None)
        self._slots: dict[str, PartResult] = {}  # insertion order: the camera waiting longest comes first
        self._next_draw: dict[str, float] = {}  # monotonic time before which a camera is not drawn again
        self._slots_lock = threading.Lock()

    def offer(self, result: PartResult) -> None:
        with self._slots_lock:
            self.counters["offered"] += 1
            if result.camera_id in self._slots:
                self.counters["skipped"] += 1
            self._slots[result.camera_id] = result  # a replaced camera keeps its place in the order
            self._wake.set()

    def _take(self, timeout: float) -> PartResult | None:
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            with self._slots_lock:
                self._wake.clear()  # under the lock: an offer after this check sets it again
                now = time.monotonic()
                soonest = None
                for cid in self._slots:
                    t_ok = self._next_draw.get(cid, 0.0)
                    if t_ok <= now:
                        self._next_draw[cid] = now + 1.0 / self.fps
                        return self._slots.pop(cid)
                    soonest = t_ok if soonest is None else min(soonest, t_ok)
            remaining = deadline - now
            if remaining <= 0:
                return None
            self._wake.wait(remaining if soonest is None else min(remaining, soonest - now))
        return None  # closing: what was not drawn yet is not drawn

    def stats(self) -> dict:
        out = super().stats()
        with self._slots_lock:
            out["queued"] = len(self._slots)
        return out

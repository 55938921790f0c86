"""What the live view shows, made in the view's own thread from parts the pipeline offers.

``ViewObserver.offer`` (decide thread, O(1)): the part becomes the latest-slot (a newer one replaces it:
the view samples the line), its score goes to the trend ring, an NG part to the NG ring (references only).
The view thread then, at most ``view.fps`` times a second: draws the heat map and the defect boxes on the
latest frame (scaled to ``view.width``), encodes it as JPEG, renders thumbnails of new NG parts, and
builds the state the page shows (``LiveState``). Nothing here can slow the line: a slow browser only
sees fewer frames, because each client is sent the newest state when it is ready for one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from ..pipeline.observers import ObserverWorker, PartResult
from .settings import ViewSettings

log = logging.getLogger(__name__)

_IDLE_STATE_S = 1.0  # with no parts flowing (camera lost, triggered line), the state still refreshes this often
_THUMB_WIDTH = 200


class LiveState:
    """The newest view frame (JPEG), NG thumbnails and state dict, with a version bumped on each change.

    Written by the view thread, read by the web server's thread; ``listeners`` are called (from the view
    thread) after each change: the server uses one to wake its event streams.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.version = 0
        self.frame_jpeg: bytes | None = None
        self.thumbs: dict[int, bytes] = {}
        self.state: dict = {"version": 0, "state": "starting"}
        self.listeners: list = []

    def update(self, state: dict, frame_jpeg: bytes | None = None, thumbs: dict[int, bytes] | None = None) -> None:
        with self._lock:
            self.version += 1
            if frame_jpeg is not None:
                self.frame_jpeg = frame_jpeg
            if thumbs is not None:
                self.thumbs = thumbs
            state["version"] = self.version
            self.state = state
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a closed server's callback; the view goes on
                log.debug("view listener failed", exc_info=True)

    def snapshot(self) -> tuple[int, dict]:
        with self._lock:
            return self.version, self.state

    def frame(self) -> bytes | None:
        with self._lock:
            return self.frame_jpeg

    def thumb(self, key: int) -> bytes | None:
        with self._lock:
            return self.thumbs.get(key)


class ViewObserver(ObserverWorker):
    """The live view's observer: samples parts at ``settings.fps`` and keeps ``LiveState`` current."""

    name = "view"

    def __init__(self, settings: ViewSettings, live: LiveState | None = None):
        super().__init__(queue_size=None)  # latest-slot
        self.settings = settings
        self.live = live if live is not None else LiveState()
        self._ring_lock = threading.Lock()
        self._trend: deque = deque(maxlen=settings.trend_parts)
        self._ng: deque = deque(maxlen=max(settings.ng_thumbnails, 1))
        self._thumbs: dict[int, bytes] = {}
        self._ng_key = 0
        self._last_state = 0.0
        self._last_result: PartResult | None = None
        self._status_fn = None
        self._t_frame = 0.0

    def offer(self, result: PartResult) -> None:
        v = result.verdict
        with self._ring_lock:
            self._trend.append((v.seq, v.score, v.threshold, result.label))
            if result.label == "ng" and self.settings.ng_thumbnails:
                self._ng_key += 1
                self._ng.append((self._ng_key, result))
        super().offer(result)

    def attach_status(self, status) -> None:
        """The pipeline's status(), for the state shown while no part arrives (camera lost)."""
        self._status_fn = status

    # ---- view thread ------------------------------------------------------------------------

    def handle(self, result: PartResult) -> None:
        self._t_frame = time.monotonic()
        self._status_fn = result.status
        self._last_result = result
        jpeg = self._render_frame(result)
        thumbs = self._render_thumbs()
        self.live.update(self._state(result), jpeg, thumbs)
        self._last_state = time.monotonic()

    def after(self, result: PartResult) -> None:
        # The frame-rate cap: wait out the rest of this frame's period (parts meanwhile replace the slot).
        rest = 1.0 / self.settings.fps - (time.monotonic() - self._t_frame)
        if rest > 0:
            self._stop.wait(rest)

    def idle(self) -> None:
        if self._status_fn is not None and time.monotonic() - self._last_state >= _IDLE_STATE_S:
            self.live.update(self._state(self._last_result))
            self._last_state = time.monotonic()

    def _encode(self, rgb: np.ndarray, width: int) -> bytes:
        import cv2

        h, w = rgb.shape[:2]
        if w > width:
            rgb = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    def _picture(self, result: PartResult, width: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB at most ``width`` wide: scaled down FIRST (a 5 MP frame is not drawn at full
        size for a 960-pixel view), then heat map and boxes (scaled alike) drawn on it."""
        import cv2

        from ..overlay import heat_and_boxes, to_rgb
        from ..verdict import Region

        image = result.frame.image
        h, w = image.shape[:2]
        regions = result.verdict.regions
        if w > width:
            f = width / w
            image = cv2.resize(image, (width, max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            regions = [Region(x=int(r.x * f), y=int(r.y * f), w=max(1, int(r.w * f)), h=max(1, int(r.h * f)),
                              area=r.area, peak=r.peak) for r in regions]
        return heat_and_boxes(to_rgb(image), result.heatmap(), regions)

    def _render_frame(self, result: PartResult) -> bytes:
        return self._encode(self._picture(result, self.settings.width), self.settings.width)

    def _render_thumbs(self) -> dict[int, bytes] | None:
        with self._ring_lock:
            ng = list(self._ng)
        keys = {k for k, _ in ng}
        if keys == set(self._thumbs):
            return None
        thumbs = {k: b for k, b in self._thumbs.items() if k in keys}
        for k, result in ng:
            if k not in thumbs:
                thumbs[k] = self._encode(self._picture(result, _THUMB_WIDTH), _THUMB_WIDTH)
        self._thumbs = thumbs
        return dict(thumbs)

    def _state(self, result: PartResult | None) -> dict:
        # Asked afresh for each state (at most view.fps a second): counters that match the part shown.
        status = self._status_fn() if self._status_fn is not None else {}
        c = status.get("counters", {})
        with self._ring_lock:
            trend = list(self._trend)
            ng = [(k, r.verdict.seq, r.verdict.score, r.camera_id, r.frame.t_wall) for k, r in self._ng]
        state = {
            "state": status.get("state", "?"),
            "counters": {k: c.get(k, 0) for k in ("frames_in", "verdicts_out", "ok", "ng", "unknown", "errors",
                                                  "publish_errors", "dropped_queue", "dropped_gap")},
            "drops": status.get("drops", 0),
            "fps": status.get("fps", 0.0),
            "camera": status.get("camera", {}),
            "model": {k: status.get(k) for k in ("model_id", "model_version", "backend", "threshold", "generation")},
            "observers": status.get("observers", {}),
            "trend": [{"seq": s, "score": sc, "threshold": th, "label": lb} for s, sc, th, lb in trend],
            "ng": [{"key": k, "seq": s, "score": sc, "camera_id": cam, "t_wall": t} for k, s, sc, cam, t in ng],
        }
        if result is not None:
            v = result.verdict
            cal = result.calibration
            state["part"] = {"camera_id": result.camera_id, "seq": v.seq, "label": result.label, "score": v.score,
                             "threshold": v.threshold, "normalised_score": v.normalised_score,
                             "regions": len(v.regions), "t_wall": result.frame.t_wall, "error": v.error,
                             "part_id": v.part_id}
            state["calibration"] = {"method": cal.image_threshold_method, "image_threshold": cal.image_threshold,
                                    "pixel_threshold": cal.pixel_threshold, "escape_rate": cal.escape_rate,
                                    "defects_source": cal.defects_source}
        return _finite(state)


def _finite(obj):
    """NaN and infinities → None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

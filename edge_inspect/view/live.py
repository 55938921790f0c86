"""What the live view shows, made in the view's own thread from parts the pipeline (or station) offers.

``ViewObserver.offer`` (decide thread, O(1)): the part becomes its camera's latest-slot (a newer one of the
same camera replaces it: the view samples the line), its score goes to its camera's trend ring, an NG part
to the NG ring (references only). The view thread then, at most ``view.fps`` times a second per camera:
draws the heat map and the defect boxes on that camera's latest frame (scaled to ``view.width``), encodes
it as JPEG, renders thumbnails of new NG parts, and builds the state the page shows (``LiveState``): one
tile per camera (frame, verdict, counters, trend, camera and model state), the NG thumbnails tagged with
their camera, and the line's state. Nothing here can slow the line: a slow browser only sees fewer frames,
because each client is sent the newest state when it is ready for one.

The status the view reads between parts (``attach_status``) is a Pipeline's (one camera: its camera is
``status["camera"]["id"]``) or a Station's (several: one entry per camera under ``status["cameras"]``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from ..pipeline.observers import PartResult
from .settings import ViewSettings
from .slots import PerCameraLatest

log = logging.getLogger(__name__)

_IDLE_STATE_S = 1.0  # with no parts flowing (camera lost, triggered line), the state still refreshes this often
_CHANGE_STATE_S = 0.2  # while a camera's state differs from the line's, the line's is read this often at most
_THUMB_WIDTH = 200


class LiveState:
    """The newest view frame (JPEG) of each camera, NG thumbnails and the state dict, with a version bumped on
    each change.

    Written by the view thread, read by the web server's thread; ``listeners`` are called (from the view
    thread) after each change: the server uses one to wake its event streams.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.version = 0
        self.frames: dict[str, bytes] = {}  # camera id → JPEG; insertion order = the tiles' order
        self.thumbs: dict[int, bytes] = {}
        self.state: dict = {"version": 0, "state": "starting", "cameras": [], "ng": []}
        self.listeners: list = []

    def update(self, state: dict, frames: dict[str, bytes] | None = None,
               thumbs: dict[int, bytes] | None = None) -> None:
        with self._lock:
            self.version += 1
            if frames:
                self.frames.update(frames)
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

    def frame(self, camera: str | None = None) -> bytes | None:
        """The newest view frame of ``camera`` (None: the first camera's)."""
        with self._lock:
            if camera is None:
                return next(iter(self.frames.values()), None)
            return self.frames.get(camera)

    def thumb(self, key: int) -> bytes | None:
        with self._lock:
            return self.thumbs.get(key)


class _Tile:
    """One camera's part of the view: its trend ring, the last part drawn and its last status."""

    def __init__(self, camera_id: str, trend_parts: int):
        self.camera_id = camera_id
        self.trend: deque = deque(maxlen=trend_parts)
        self.last_result: PartResult | None = None
        self.status: dict = {}
        self.frame_version = 0


class ViewObserver(PerCameraLatest):
    """The live view's observer: samples each camera's parts at ``settings.fps`` and keeps ``LiveState`` current."""

    name = "view"

    def __init__(self, settings: ViewSettings, live: LiveState | None = None):
        super().__init__()
        self.settings = settings
        self.fps = settings.fps
        self.live = live if live is not None else LiveState()
        self._ring_lock = threading.Lock()
        self._tiles: dict[str, _Tile] = {}  # insertion order: the page's tile order
        self._ng: deque = deque(maxlen=max(settings.ng_thumbnails, 1))
        self._thumbs: dict[int, bytes] = {}
        self._ng_key = 0
        self._status_fn = None
        self._line_state: str | None = None  # the attached status's state (a station's: its cameras' worst)
        self._observers: dict = {}  # the observers' counters from the freshest status read
        self._t_status = -1e9  # when the attached status was last read (monotonic)

    def _tile(self, camera_id: str) -> _Tile:
        """The camera's tile (made on first sight); call with ``_ring_lock`` held."""
        tile = self._tiles.get(camera_id)
        if tile is None:
            tile = self._tiles[camera_id] = _Tile(camera_id, self.settings.trend_parts)
        return tile

    def offer(self, result: PartResult) -> None:
        v = result.verdict
        with self._ring_lock:
            self._tile(result.camera_id).trend.append((v.seq, v.score, v.threshold, result.label))
            if result.label == "ng" and self.settings.ng_thumbnails:
                self._ng_key += 1
                self._ng.append((self._ng_key, result))
        super().offer(result)

    def attach_status(self, status) -> None:
        """A Pipeline's or a Station's status(): the state shown between parts (a camera lost, a slow trigger)."""
        self._status_fn = status

    # ---- view thread ------------------------------------------------------------------------

    def handle(self, result: PartResult) -> None:
        status = result.status()  # this camera's pipeline: counters that match the part shown
        jpeg = self._render_frame(result)
        with self._ring_lock:
            tile = self._tile(result.camera_id)
            tile.last_result, tile.status = result, status
            tile.frame_version += 1
            self._observers = status.get("observers", self._observers)
        # The other cameras' tiles and the line's state: once a second, or sooner (≤ 5 a second) while this
        # camera's state is not the line's (starting, stopping), so the header follows a change promptly.
        self._read_status(_IDLE_STATE_S if status.get("state") == self._line_state else _CHANGE_STATE_S)
        thumbs = self._render_thumbs()
        self.live.update(self._state(), {result.camera_id: jpeg}, thumbs)

    def idle(self) -> None:
        if self._read_status():
            self.live.update(self._state())

    def _read_status(self, every_s: float = _IDLE_STATE_S) -> bool:
        """Refresh every tile and the line's state from the attached status (at most every ``every_s``);
        True when it did. Handles both shapes: a Pipeline's status and a Station's (``cameras``)."""
        now = time.monotonic()
        if self._status_fn is None or now - self._t_status < every_s:
            return False
        self._t_status = now
        status = self._status_fn()
        if "cameras" in status:
            per_camera = status["cameras"]
        else:
            per_camera = {status.get("camera", {}).get("id", "camera"): status}
        with self._ring_lock:
            for cid, s in per_camera.items():
                self._tile(cid).status = s
            # The tiles in the station's order (a camera's first part may have come before its turn).
            self._tiles = {cid: self._tiles.pop(cid) for cid in [*per_camera, *self._tiles] if cid in self._tiles}
            first = next(iter(per_camera.values()), {})
            self._line_state = status.get("state")
            self._observers = first.get("observers", self._observers)
        return True

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

    def _state(self) -> dict:
        """The page's state: the line (state, observers), one tile per camera, the NG thumbnails."""
        with self._ring_lock:
            tiles = [(t.camera_id, t.status, list(t.trend), t.last_result, t.frame_version)
                     for t in self._tiles.values()]
            ng = [(k, r.verdict.seq, r.verdict.score, r.camera_id, r.frame.t_wall) for k, r in self._ng]
            line_state, observers = self._line_state, self._observers
        if line_state is None:  # no status attached (or not read yet): the first camera's
            line_state = tiles[0][1].get("state", "?") if tiles else "starting"
        state = {
            "state": line_state,
            "observers": observers,
            "cameras": [_tile_state(*t) for t in tiles],
            "ng": [{"key": k, "seq": s, "score": sc, "camera_id": cam, "t_wall": t} for k, s, sc, cam, t in ng],
        }
        return _finite(state)


def _tile_state(camera_id: str, status: dict, trend: list, result: PartResult | None, frame_version: int) -> dict:
    """One camera's tile: its state, counters, camera and model, trend, and the last part drawn (if any)."""
    c = status.get("counters", {})
    tile = {
        "id": camera_id,
        "state": status.get("state", "starting"),
        "counters": {k: c.get(k, 0) for k in ("frames_in", "verdicts_out", "ok", "ng", "unknown", "errors",
                                              "publish_errors", "dropped_queue", "dropped_gap")},
        "drops": status.get("drops", 0),
        "fps": status.get("fps", 0.0),
        "camera": status.get("camera") or {"id": camera_id, "state": "?"},
        "model": {k: status.get(k) for k in ("model_id", "model_version", "backend", "threshold", "generation")},
        "trend": [{"seq": s, "score": sc, "threshold": th, "label": lb} for s, sc, th, lb in trend],
        "frame": frame_version if result is not None else None,
    }
    if result is not None:
        v = result.verdict
        cal = result.calibration
        tile["part"] = {"camera_id": result.camera_id, "seq": v.seq, "label": result.label, "score": v.score,
                        "threshold": v.threshold, "normalised_score": v.normalised_score,
                        "regions": len(v.regions), "t_wall": result.frame.t_wall, "error": v.error,
                        "part_id": v.part_id}
        tile["calibration"] = {"method": cal.image_threshold_method, "image_threshold": cal.image_threshold,
                               "pixel_threshold": cal.pixel_threshold, "escape_rate": cal.escape_rate,
                               "defects_source": cal.defects_source}
    return tile


def _finite(obj):
    """NaN and infinities → None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

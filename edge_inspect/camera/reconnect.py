"""ReconnectingSource: one camera sequence across reopenings, and no stale or black frame ever inspected.

It wraps a raw source and adds, for live cameras (``raw.live``):
  * frame checks: a frame identical to the previous one, or with the same source timestamp, is a
    hung stream repeating itself (``stale``); a frame whose brightest pixel is at or below
    ``black_level`` is a dead stream (``black``). Both are dropped and counted, and their sequence
    numbers are used up, so the pipeline sees them as gaps (drops), never as inspected parts.
  * stall detection (free-run): no fresh frame for ``stall_timeout_s`` (at least 3 frame periods)
    raises CameraError, so the camera is reopened even when the driver keeps "succeeding".
  * one sequence for the camera's life: after a reopen the sequence continues; in free-run the gap
    is the number of frames the outage cost at the camera's frame rate (at least 1).
  * reconnection: a CameraError closes the raw source and is raised (the caller learns of the
    fault and can publish it). The caller may then close()/open() on its own schedule, as the
    pipeline does, or just keep calling read(): read() retries open with exponential backoff from
    ``reconnect_initial_s`` to ``reconnect_max_s``, returns None while waiting and raises
    CameraError for each failed attempt.
``status()`` reports state ("connected", "reconnecting", "closed") and the counters.
Non-live sources (file, dir, synthetic) pass through unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import CameraError
from .base import Frame, FrameSource
from .settings import CameraSettings

log = logging.getLogger(__name__)


@dataclass
class CameraCounters:
    frames: int = 0  # delivered
    stale_dropped: int = 0
    black_dropped: int = 0
    bad_frames: int = 0  # unreadable frames the raw source skipped (e.g. a truncated file in dir://)
    reconnects: int = 0
    failed_opens: int = 0
    errors: int = 0  # times the camera was lost (read error or stall)
    lost_in_outages: int = 0  # sequence numbers skipped for frames missed while disconnected


_RAW_COUNTERS = ("lost_triggers", "incomplete_buffers", "unexpected_frames")


class ReconnectingSource(FrameSource):
    """See the module docstring. ``raw`` is an unopened FrameSource; settings: the camera section."""

    def __init__(self, raw: FrameSource, settings: CameraSettings | None = None):
        self.raw = raw
        self.settings = settings or CameraSettings()
        self.camera_id = raw.camera_id
        self.live = bool(getattr(raw, "live", False))
        self.counters = CameraCounters()
        self.state = "closed"
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._raw_open = False
        self._ever_connected = False
        self._outage = False  # lost since the last delivered frame: the next session gets a gap
        self._backoff = self.settings.reconnect_initial_s
        self._next_attempt = 0.0
        self._state_since = time.monotonic()
        # sequence mapping: out seq = raw seq + offset within one open session
        self._offset: int | None = None
        self._last_raw_seq: int | None = None
        self._next_seq = 0
        # freshness
        self._last_image: np.ndarray | None = None
        self._last_source_ts = None
        self._last_fresh_t: float | None = None
        self._last_frame_t: float | None = None
        self._period: float | None = None

    # ---- state -----------------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("camera %s: %s → %s", self.camera_id, self.state, state)
            self.state, self._state_since = state, time.monotonic()

    def status(self) -> dict:
        """{"state", "since_s", "last_error", "seq_next", counters...} for heartbeats and `check`."""
        bad = getattr(self.raw, "bad_files", None)
        if bad is not None:
            self.counters.bad_frames = int(bad)
        out = {"camera_id": self.camera_id, "state": self.state,
               "since_s": round(time.monotonic() - self._state_since, 3), "last_error": self.last_error,
               "seq_next": self._next_seq, **asdict(self.counters)}
        for name in _RAW_COUNTERS:  # what only some sources know (GigE trigger bookkeeping)
            value = getattr(self.raw, name, None)
            if value is not None:
                out[name] = int(value)
        return out

    def describe(self) -> dict:
        describe = getattr(self.raw, "describe", None)
        return describe() if describe else {}

    # ---- FrameSource -----------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._raw_open:
                self._close_raw()
            try:
                self.raw.open()
            except CameraError as exc:
                self.counters.failed_opens += 1
                self._fail(f"open failed: {exc}", reconnecting=self._ever_connected)
                raise
            self._raw_open = True
            if self._ever_connected:
                self.counters.reconnects += 1
                log.info("camera %s reconnected", self.camera_id)
            self._ever_connected = True
            self._backoff = self.settings.reconnect_initial_s
            self._offset = None
            self._last_raw_seq = None
            self._last_image, self._last_source_ts = None, None
            self._last_fresh_t = time.monotonic()
            self.last_error = None
            self._set_state("connected")

    def close(self) -> None:
        with self._lock:
            self._close_raw()
            if self.state == "connected":
                self._set_state("closed")

    def trigger(self, part_id: str | None = None) -> None:
        if self.state != "connected":
            raise CameraError(f"camera {self.camera_id} is {self.state}; trigger for part {part_id} not executed")
        self.raw.trigger(part_id)

    def read(self, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        if not self._raw_open:
            if not self._ever_connected:
                raise CameraError(f"camera {self.camera_id} is not open")
            if not self._retry_open(deadline):
                return None
        while True:
            left = deadline - time.monotonic()
            try:
                frame = self.raw.read(max(0.0, left))
            except CameraError as exc:
                self._lose(str(exc))
                raise
            now = time.monotonic()
            if frame is None:
                self._check_stall(now)
                return None
            out = self._accept(frame, now)
            if out is not None:
                return out
            self._check_stall(now)
            if time.monotonic() >= deadline:
                return None

    # ---- internals -------------------------------------------------------------------------------

    def _retry_open(self, deadline: float) -> bool:
        """Wait for the backoff slot (up to ``deadline``) and try to open; True when open."""
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            if time.monotonic() < self._next_attempt:
                return False
        try:
            self.open()
        except CameraError as exc:
            raise CameraError(f"camera {self.camera_id}: reconnect failed ({exc}); next try in {self._backoff:.1f} s") from exc
        return True

    def _fail(self, message: str, reconnecting: bool) -> None:
        self.last_error = message
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.settings.reconnect_max_s)
        if reconnecting:
            self._outage = True
            self._set_state("reconnecting")

    def _lose(self, message: str) -> None:
        """The camera is gone: close the raw source, schedule a reopen, keep the sequence going."""
        with self._lock:
            self.counters.errors += 1
            log.warning("camera %s lost: %s", self.camera_id, message)
            self._close_raw()
            self._backoff = self.settings.reconnect_initial_s
            self._fail(message, reconnecting=True)

    def _close_raw(self) -> None:
        if self._raw_open:
            self._raw_open = False
            try:
                self.raw.close()
            except Exception:  # noqa: BLE001 - closing a dead camera may fail; it is closed for us
                log.debug("camera %s: close failed", self.camera_id, exc_info=True)

    def _check_stall(self, now: float) -> None:
        if not self.live or getattr(self.raw, "trigger_mode", "free") != "free" or self._last_fresh_t is None:
            return
        limit = self.settings.stall_timeout_s
        if self._period:
            limit = max(limit, 3 * self._period)
        if now - self._last_fresh_t > limit:
            msg = f"no new frame for {now - self._last_fresh_t:.1f} s (stalled stream)"
            self._lose(msg)
            raise CameraError(f"camera {self.camera_id}: {msg}")

    def _map_seq(self, raw_seq: int, t_capture: float) -> int:
        if self._offset is None or self._last_raw_seq is None or raw_seq <= self._last_raw_seq:
            gap = self._outage_gap(t_capture) if self._offset is None else 0
            self._offset = self._next_seq + gap - raw_seq
        self._last_raw_seq = raw_seq
        seq = raw_seq + self._offset
        self._next_seq = seq + 1
        return seq

    def _outage_gap(self, t_capture: float) -> int:
        """Sequence numbers to skip for the frames a free-running camera produced while we were away."""
        if not self._outage:
            return 0
        self._outage = False
        if getattr(self.raw, "trigger_mode", "free") != "free":
            return 0  # triggered: nothing is produced without us; lost triggers are reported apart
        # The camera's own frame rate first: capture times right after an open come in bursts.
        nominal = getattr(self.raw, "nominal_fps", None)
        period = 1.0 / nominal if nominal else self._period
        missed = 1
        if period and self._last_frame_t is not None:
            missed = max(1, round((t_capture - self._last_frame_t) / period) - 1)
        self.counters.lost_in_outages += missed
        return missed

    def _accept(self, frame: Frame, now: float) -> Frame | None:
        """Map the sequence; drop (count) stale and black frames of live cameras. The frame or None."""
        seq = self._map_seq(frame.seq, frame.t_capture)
        if self.live:
            why = self._why_drop(frame)
            if why is not None:
                if why == "stale":
                    self.counters.stale_dropped += 1
                else:
                    self.counters.black_dropped += 1
                log.debug("camera %s: dropped %s frame seq %d", self.camera_id, why, seq)
                return None
        if self._last_frame_t is not None and frame.t_capture > self._last_frame_t:
            dt = frame.t_capture - self._last_frame_t
            self._period = dt if self._period is None else 0.9 * self._period + 0.1 * dt
        self._last_frame_t = frame.t_capture
        self._last_fresh_t = now
        self._outage = False
        self.counters.frames += 1
        # A new Frame: the raw source may still hold (and compare) the one it handed out.
        return replace(frame, seq=seq, camera_id=self.camera_id)

    def _why_drop(self, frame: Frame) -> str | None:
        image = frame.image
        ts = frame.meta.get("source_ts") if frame.meta else None
        previous, prev_ts = self._last_image, self._last_source_ts
        self._last_image, self._last_source_ts = image, ts
        if self.settings.drop_repeated:
            if ts is not None and prev_ts is not None and ts == prev_ts:
                return "stale"
            if previous is not None and previous.shape == image.shape and _same_pixels(previous, image):
                return "stale"
        level = self.settings.black_level
        if level is not None:
            limit = level * 257 if image.dtype == np.uint16 else level
            if int(image[::4, ::4].max()) <= limit and int(image.max()) <= limit:
                return "black"
        return None


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    # A cheap subsample first: new frames almost always differ there.
    return bool(np.array_equal(a[::7, ::7], b[::7, ::7]) and np.array_equal(a, b))

"""ReconnectingSource: the one owner of opening, reconnecting and numbering a camera's frames.

It wraps a raw source (``camera.base.FrameSource``) and is what the pipeline reads from. It owns:
  * reconnection: a camera that was lost (read error, stall) is closed; later ``read`` calls reopen it.
    Full open attempts back off from ``reconnect_initial_s``, doubling up to ``reconnect_max_s``; between
    them a source that can ``probe()`` cheaply (RTSP: TCP connect; V4L2: device node; dir://: the folder)
    is probed every ``reconnect_probe_s`` and opened at once when it is back. A probe that says "not
    reachable" saves the (possibly slow) open attempt. While waiting, ``read`` returns None; a failed open
    attempt raises CameraError (the caller learns of each one). ``interrupt()`` ends a wait early.
  * the first open: a camera never seen in this run is not retried for ever: ``open(wait_s)`` tries for
    at most ``wait_s`` seconds (0: once) and raises CameraError.
  * one sequence for the camera's life, and its gaps, counted once (``counters.gaps``): after a reopen the
    sequence continues; for a free-running camera (live, or a recording paced at ``?fps=N``) the outage
    costs as many numbers as frames it produced meanwhile (at least 1); an unpaced recording loses none.
    A file source numbers its own frames from 0 (a bad first or last file is a gap too). Every number
    that never reached the caller as a frame is one gap.
  * frame checks for live cameras (``raw.live``): a frame identical to the previous one, or with the same
    source timestamp, is a hung stream repeating itself (``stale``); a frame whose brightest pixel is at or
    below ``black_level`` is a dead stream (``black``). Both are dropped and counted, and their sequence
    numbers are used up (gaps), so they are never inspected as parts.
  * stall detection (live, free-run): no fresh frame for ``stall_timeout_s`` (at least 3 frame periods)
    is a lost camera, even when the driver keeps "succeeding".
  * lost / back events: ``add_listener(fn)`` is called with (state, last_error) on every change of state
    ("closed", "connected", "reconnecting").
``status()`` reports the state and the counters (with the raw source's own, ``raw.counters()``). It takes no
lock, so a heartbeat never waits on a slow camera open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import CameraError, ConfigError, DependencyError
from .base import CameraSource, EndOfStream, Frame, FrameSource, SourceFeatures
from .settings import CameraSettings

log = logging.getLogger(__name__)

StateListener = Callable[[str, "str | None"], None]
# The members of camera.base.CameraSource and SourceFeatures, named in the error for a source that lacks some.
_DECLARED = ("camera_id", "open", "read", "close", "trigger", "live", "recorded", "trigger_mode", "nominal_fps",
             "describe", "counters", "probe")


@dataclass
class CameraCounters:
    frames: int = 0  # delivered
    gaps: int = 0  # sequence numbers that never became a delivered frame (every kind of drop below, and more)
    stale_dropped: int = 0
    black_dropped: int = 0
    reconnects: int = 0
    failed_opens: int = 0
    errors: int = 0  # times the camera was lost (read error or stall)
    lost_in_outages: int = 0  # sequence numbers skipped for frames missed while disconnected


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"


class ReconnectingSource(FrameSource):
    """See the module docstring. ``raw`` is an unopened source; settings: the camera section."""

    def __init__(self, raw: FrameSource, settings: CameraSettings | None = None):
        if not isinstance(raw, CameraSource) or not isinstance(raw, SourceFeatures):
            missing = [name for name in _DECLARED if not hasattr(raw, name)]
            raise TypeError(f"{type(raw).__name__} is not a camera source (missing: {', '.join(missing)}); "
                            "derive it from camera.base.FrameSource")
        self.raw = raw
        self.settings = settings or CameraSettings()
        self.camera_id = raw.camera_id
        self.live = bool(raw.live)
        self.recorded = bool(raw.recorded)
        self.counters = CameraCounters()
        self.state = "closed"
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._listeners: list[StateListener] = []
        self._interrupted = threading.Event()
        self._raw_open = False
        self._ever_connected = False
        self._outage = False  # lost since the last delivered frame: the next session gets a gap
        self._lost_reason: str | None = None
        self._backoff = self.settings.reconnect_initial_s
        self._next_attempt = 0.0
        self._next_probe = 0.0
        self._probe_said_down = False
        self._reachable: bool | None = None  # the last probe's answer
        self._state_since = time.monotonic()
        # sequence mapping: out seq = raw seq + offset within one open session
        self._offset: int | None = None
        self._numbered = False  # an offset was ever set (the first session of a file source keeps raw numbers)
        self._last_raw_seq: int | None = None
        self._next_seq = 0  # one past the last sequence number used (delivered or dropped)
        self._expected = 0  # the next sequence number the caller has not yet had or been told is lost
        # freshness
        self._last_image: np.ndarray | None = None
        self._last_source_ts = None
        self._last_fresh_t: float | None = None
        self._last_frame_t: float | None = None
        self._period: float | None = None

    # ---- features delegated to the raw source (they may change when it opens) --------------------

    @property
    def trigger_mode(self) -> str:
        return self.raw.trigger_mode

    @property
    def nominal_fps(self) -> float | None:
        return self.raw.nominal_fps

    def describe(self) -> dict:
        return self.raw.describe()

    def probe(self) -> bool | None:
        return self.raw.probe()

    # ---- state and events ------------------------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """``listener(state, last_error)`` on each change of state; called from the reading thread."""
        self._listeners.append(listener)

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.info("camera %s: %s → %s", self.camera_id, self.state, state)
        self.state, self._state_since = state, time.monotonic()
        for listener in list(self._listeners):
            try:
                listener(state, self.last_error)
            except Exception:  # a listener's bug must not break the camera
                log.warning("camera %s: state listener failed", self.camera_id, exc_info=True)

    def status(self) -> dict:
        """{"camera_id", "state", "since_s", "last_error", "seq_next", counters..., the raw source's counters}."""
        out = {"camera_id": self.camera_id, "state": self.state,
               "since_s": round(time.monotonic() - self._state_since, 3), "last_error": self.last_error,
               "seq_next": self._next_seq, **asdict(self.counters)}
        try:
            out.update(self.raw.counters())
        except Exception:  # counters are a report; a broken one must not break the heartbeat
            log.debug("camera %s: raw counters failed", self.camera_id, exc_info=True)
        return out

    def interrupt(self) -> None:
        """Stop waiting for the next reconnect attempt (the caller is stopping): ``read`` returns None at once."""
        self._interrupted.set()

    # ---- FrameSource -----------------------------------------------------------------------------

    def open(self, wait_s: float = 0.0) -> None:
        """Open the camera. CameraError when it cannot be opened within ``wait_s`` seconds (0: one attempt,
        with back-off between attempts); ConfigError / DependencyError at once (retrying cannot help)."""
        self._interrupted.clear()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._open_once()
                return
            except CameraError:
                left = deadline - time.monotonic()
                if left <= 0 or self._interrupted.is_set():
                    raise
                self._interrupted.wait(min(left, max(0.0, self._next_attempt - time.monotonic())))

    def close(self) -> None:
        with self._lock:
            self._close_raw()
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
            if not self._reconnect(deadline):
                return None
        while True:
            left = deadline - time.monotonic()
            try:
                frame = self.raw.read(max(0.0, left))
            except EndOfStream as end:
                self._count_tail(end.next_seq)
                raise
            except (ConfigError, DependencyError):
                raise
            except Exception as exc:  # CameraError, or whatever a driver throws: the camera is lost
                self._lose(_why(exc))
                if isinstance(exc, CameraError):
                    raise
                raise CameraError(f"camera {self.camera_id}: {_why(exc)}") from exc
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

    # ---- opening and reconnecting ----------------------------------------------------------------

    def _open_once(self) -> None:
        with self._lock:
            if self._raw_open:
                self._close_raw()
            try:
                self.raw.open()
            except (ConfigError, DependencyError):
                raise
            except Exception as exc:
                self.counters.failed_opens += 1
                why = _why(exc)
                self._schedule_retry(f"{self._lost_reason}; reopen failed: {why}" if self._lost_reason
                                     else f"open failed: {why}")
                if self._ever_connected:
                    self._set_state("reconnecting")
                if isinstance(exc, CameraError):
                    raise
                raise CameraError(f"camera {self.camera_id}: open failed: {why}") from exc
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
            self.last_error, self._lost_reason = None, None
            self._set_state("connected")

    def _reconnect(self, deadline: float) -> bool:
        """Wait (up to ``deadline``) for the next attempt and reopen; True when open. A failed attempt raises
        CameraError. A probe that says the camera is back opens it at once; one that says it is not there
        skips the attempt."""
        probe_every = self.settings.reconnect_probe_s
        while not self._interrupted.is_set():
            now = time.monotonic()
            if now >= self._next_probe:
                self._reachable = self._probe()  # holds until the next probe
                self._next_probe = now + probe_every
                if self._reachable is False:
                    self._probe_said_down = True
            reachable = self._reachable
            back = reachable is True and self._probe_said_down
            if back or (now >= self._next_attempt and reachable is not False):
                if back:
                    log.info("camera %s answers again; reopening", self.camera_id)
                self._probe_said_down = False
                try:
                    self._open_once()
                except CameraError as exc:
                    raise CameraError(f"camera {self.camera_id}: reconnect failed ({exc}); "
                                      f"next try in {self._backoff:.1f} s") from exc
                return True
            wake = min(self._next_probe, deadline)
            if reachable is not False:
                wake = min(wake, self._next_attempt)
            if now >= deadline:
                return False
            self._interrupted.wait(max(0.0, wake - now))
        return False

    def _probe(self) -> bool | None:
        try:
            return self.raw.probe()
        except Exception:  # a probe is a hint; a broken one means "cannot tell"
            log.debug("camera %s: probe failed", self.camera_id, exc_info=True)
            return None

    def _schedule_retry(self, message: str) -> None:
        self.last_error = message
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.settings.reconnect_max_s)

    def _lose(self, message: str) -> None:
        """The camera is gone: close the raw source, schedule a reopen, keep the sequence going."""
        with self._lock:
            self.counters.errors += 1
            log.warning("camera %s lost: %s", self.camera_id, message)
            self._close_raw()
            self._lost_reason = message
            self._backoff = self.settings.reconnect_initial_s
            self._schedule_retry(message)
            self._next_probe = time.monotonic() + self.settings.reconnect_probe_s
            self._probe_said_down, self._reachable = False, None
            self._outage = True
            self._set_state("reconnecting")

    def _close_raw(self) -> None:
        if self._raw_open:
            self._raw_open = False
            try:
                self.raw.close()
            except Exception:  # closing a dead camera may fail; it is closed for us
                log.debug("camera %s: close failed", self.camera_id, exc_info=True)

    def _check_stall(self, now: float) -> None:
        if not self.live or self.raw.trigger_mode != "free" or self._last_fresh_t is None:
            return
        limit = self.settings.stall_timeout_s
        if self._period:
            limit = max(limit, 3 * self._period)
        if now - self._last_fresh_t > limit:
            msg = f"no new frame for {now - self._last_fresh_t:.1f} s (stalled stream)"
            self._lose(msg)
            raise CameraError(f"camera {self.camera_id}: {msg}")

    # ---- sequence numbers and gaps -----------------------------------------------------------------

    def _new_offset(self, raw_seq: int, t_capture: float | None) -> int:
        """Offset of a new session (or of a raw counter that restarted within one)."""
        if not self._numbered and not self.live:
            return 0  # a file source's own numbers: file k is seq k, so skipped first files are gaps
        gap = self._outage_gap(t_capture) if self._offset is None else 0
        return self._next_seq + gap - raw_seq

    def _map_seq(self, raw_seq: int, t_capture: float) -> int:
        if self._offset is None or self._last_raw_seq is None or raw_seq <= self._last_raw_seq:
            self._offset = self._new_offset(raw_seq, t_capture)
            self._numbered = True
        self._last_raw_seq = raw_seq
        seq = raw_seq + self._offset
        self._next_seq = max(self._next_seq, seq + 1)
        return seq

    def _count_delivered(self, seq: int) -> None:
        if seq > self._expected:
            self.counters.gaps += seq - self._expected
            log.debug("camera %s: %d sequence number(s) lost before seq %d", self.camera_id,
                      seq - self._expected, seq)
        self._expected = max(self._expected, seq + 1)

    def _count_tail(self, next_raw_seq: int | None) -> None:
        """End of a finite source: numbers it used up after the last delivered frame are gaps too."""
        if next_raw_seq is None:
            return
        offset = self._offset if self._offset is not None else (0 if not self._numbered and not self.live else None)
        if offset is None:
            return
        end = next_raw_seq + offset
        if end > self._expected:
            self.counters.gaps += end - self._expected
            log.debug("camera %s: %d frame(s) skipped at the end of the stream", self.camera_id, end - self._expected)
            self._expected = end
        self._next_seq = max(self._next_seq, end)

    def _outage_gap(self, t_capture: float | None) -> int:
        """Sequence numbers to skip for the frames a free-running camera produced while we were away."""
        if not self._outage:
            return 0
        self._outage = False
        if self.raw.trigger_mode != "free":
            return 0  # triggered: nothing is produced without us; lost triggers are reported apart
        # The camera's own frame rate first: capture times right after an open come in bursts.
        nominal = self.raw.nominal_fps
        if not self.live and not nominal:
            return 0  # an unpaced recording waits for us: nothing was produced (or lost) meanwhile
        period = 1.0 / nominal if nominal else self._period
        missed = 1
        if period and self._last_frame_t is not None and t_capture is not None:
            missed = max(1, round((t_capture - self._last_frame_t) / period) - 1)
        self.counters.lost_in_outages += missed
        return missed

    # ---- frame checks ------------------------------------------------------------------------------

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
        self._count_delivered(seq)
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

"""Pipeline health numbers: per-stage latency (rolling median / p99), frames per second, counters, and the
drop watch that warns while running when too many frames are dropped.

Thread-safe: stages record from their own threads; ``snapshot`` is read by the status channel.
Times are milliseconds for latencies and ``time.monotonic`` seconds elsewhere.

Each counter has one owner. The pipeline's own are counted here; the camera's (sequence gaps, camera
errors, reconnects) are kept by the source wrapper (camera.reconnect) and only read here, through
``link_counters``, so a snapshot shows them all without counting anything twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

# Every frame taken from the source ends as one published verdict, one verdict the publisher refused, or
# one queue drop:
#   frames_in == verdicts_out + publish_errors + dropped_queue (once the pipeline has drained).
# dropped_gap counts frames the camera skipped (sequence gaps); they never reached frames_in.
COUNTERS = (
    "frames_in",  # frames taken from the source
    "verdicts_out",  # verdicts the publisher accepted (ok + ng + unknown, each as published)
    "ok",
    "ng",
    "unknown",
    "dropped_queue",  # free-run: an older queued frame replaced by a newer one
    "dropped_gap",  # camera sequence gaps (frames lost before we saw them); kept by the source wrapper
    "errors",  # exceptions while judging a frame (each also gives an unknown verdict)
    "timeouts",  # inferences that ran past pipeline.infer_timeout_s
    "late_results",  # timed-out inferences that finished later (result discarded)
    "camera_errors",  # camera lost or a failed (re)open; kept by the source wrapper
    "reconnects",  # successful re-opens after a camera error; kept by the source wrapper
    "publish_errors",  # publisher.publish raised: the verdict was NOT published (not in verdicts_out)
    "reloads",  # successful model swaps
)


class LatencyWindow:
    """The last ``size`` samples of one stage's latency in ms."""

    def __init__(self, size: int = 1000):
        self._samples: deque[float] = deque(maxlen=size)
        self.total = 0

    def add(self, ms: float) -> None:
        self._samples.append(float(ms))
        self.total += 1

    def summary(self) -> dict[str, float]:
        """{"median": ms, "p99": ms, "mean": ms, "count": samples seen in total}; zeros when empty."""
        if not self._samples:
            return {"median": 0.0, "p99": 0.0, "mean": 0.0, "count": 0}
        arr = np.fromiter(self._samples, np.float64, len(self._samples))
        median, p99 = np.percentile(arr, [50, 99])
        return {"median": round(float(median), 3), "p99": round(float(p99), 3),
                "mean": round(float(arr.mean()), 3), "count": self.total}


class PipelineStats:
    """Counters, per-stage latency windows and a rolling frame rate for one running pipeline."""

    def __init__(self, window: int = 1000, fps_window_s: float = 5.0, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._window = window
        self._fps_window_s = fps_window_s
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._linked: Callable[[], dict[str, int]] | None = None
        self._latency: dict[str, LatencyWindow] = {}
        self._verdict_times: deque[float] = deque(maxlen=100_000)
        self.t_start = clock()
        self._t_first_verdict: float | None = None
        self._t_last_verdict: float | None = None

    def link_counters(self, read: Callable[[], dict[str, int]]) -> None:
        """Counters owned elsewhere (e.g. the camera's gaps): ``read()`` gives their current values, which
        every ``get`` and ``snapshot`` shows in place of the local ones of the same names."""
        self._linked = read

    def _read_linked(self) -> dict[str, int]:
        if self._linked is None:
            return {}
        try:
            return self._linked()
        except Exception:  # a report must not fail because of a broken reader
            log.debug("linked counters failed", exc_info=True)
            return {}

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def get(self, name: str) -> int:
        linked = self._read_linked()
        if name in linked:
            return linked[name]
        with self._lock:
            return self.counters.get(name, 0)

    def record(self, stage: str, ms: float) -> None:
        with self._lock:
            win = self._latency.get(stage)
            if win is None:
                win = self._latency[stage] = LatencyWindow(self._window)
            win.add(ms)

    def record_many(self, latencies_ms: dict[str, float]) -> None:
        for stage, ms in latencies_ms.items():
            self.record(stage, ms)

    def mark_verdict(self, label: str) -> None:
        """Count one verdict with its label and note its time for the frame rate."""
        now = self._clock()
        with self._lock:
            self.counters["verdicts_out"] += 1
            self.counters[label] = self.counters.get(label, 0) + 1
            self._verdict_times.append(now)
            if self._t_first_verdict is None:
                self._t_first_verdict = now
            self._t_last_verdict = now

    def fps(self) -> float:
        """Verdicts per second over the last ``fps_window_s`` (0 with fewer than 2 verdicts there)."""
        now = self._clock()
        with self._lock:
            times = self._verdict_times
            while times and now - times[0] > self._fps_window_s:
                times.popleft()
            if len(times) < 2 or times[-1] <= times[0]:
                return 0.0
            return (len(times) - 1) / (times[-1] - times[0])

    def mean_fps(self) -> float:
        """Verdicts per second between the first and last verdict of the run."""
        with self._lock:
            n = self.counters["verdicts_out"]
            if n < 2 or self._t_first_verdict is None or self._t_last_verdict == self._t_first_verdict:
                return 0.0
            return (n - 1) / (self._t_last_verdict - self._t_first_verdict)

    def latency(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {stage: win.summary() for stage, win in self._latency.items()}

    def snapshot(self) -> dict:
        """Plain-data view for status requests and heartbeats."""
        fps = self.fps()
        linked = self._read_linked()
        with self._lock:
            counters = {**self.counters, **linked}
        return {
            "fps": round(fps, 2),
            "mean_fps": round(self.mean_fps(), 2),
            "counters": counters,
            "latency_ms": self.latency(),
            "uptime_s": round(self._clock() - self.t_start, 3),
        }

    def log_line(self) -> str:
        """One compact line: fps, verdict counts, drops, errors, per-stage median/p99 ms."""
        snap = self.snapshot()
        c = snap["counters"]
        stages = " ".join(
            f"{stage}={lat['median']:.1f}/{lat['p99']:.1f}" for stage, lat in snap["latency_ms"].items()
        )
        return (
            f"fps={snap['fps']:.1f} in={c['frames_in']} out={c['verdicts_out']} ok={c['ok']} ng={c['ng']} "
            f"unknown={c['unknown']} drops={c['dropped_queue']}+{c['dropped_gap']}gap errors={c['errors']} "
            f"publish_errors={c['publish_errors']} "
            f"latency_ms(median/p99) {stages}"
        )


class PeriodicReporter:
    """Calls ``report()`` at most once every ``interval_s``; ``tick()`` is cheap enough for a hot loop."""

    def __init__(self, interval_s: float, report, clock=time.monotonic):
        self.interval_s = interval_s
        self._report = report
        self._clock = clock
        self._next = clock() + interval_s

    def tick(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        try:
            self._report()
        except Exception:  # a failing report must never stop the stage that ticks it
            log.exception("periodic report failed")
        return True


class DropWatch:
    """Warns while running (not only in the summary) when the share of frames dropped passes ``share``.

    ``observe(taken, dropped)`` with running totals, as often as convenient (cheap). Once at least
    ``min_frames`` frames were taken or lost since the last look, their dropped share is checked; above
    ``share`` it logs a WARNING and returns the line, then stays quiet for ``quiet_s``. ``dropped`` counts
    queue drops and camera gaps alike: frames that were never judged.
    """

    def __init__(self, share: float | None, min_frames: int = 20, quiet_s: float = 10.0, clock=time.monotonic):
        self.share = share
        self.min_frames = min_frames
        self.quiet_s = quiet_s
        self._clock = clock
        self._base = (0, 0)
        self._quiet_until = -float("inf")
        self.warnings = 0

    def observe(self, taken: int, dropped: int) -> str | None:
        if self.share is None:
            return None
        seen = (taken + dropped) - sum(self._base)
        lost = dropped - self._base[1]
        if seen < self.min_frames:
            return None
        self._base = (taken, dropped)
        now = self._clock()
        if lost / seen <= self.share or now < self._quiet_until:
            return None
        self._quiet_until = now + self.quiet_s
        self.warnings += 1
        line = (f"{lost} of the last {seen} frames were dropped ({100 * lost / seen:.0f} %, warning above "
                f"{100 * self.share:.0f} %): the camera delivers faster than the line judges; use "
                "--mode lossless, a lower camera rate, or a faster backend")
        log.warning("%s", line)
        return line

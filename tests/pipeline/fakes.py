"""Fakes for pipeline tests: a scripted frame source, a recording publisher (a VerdictSink with its own
heartbeat clock, like the real one) and notifier, a wrapping backend."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from edge_inspect.backends.base import Backend
from edge_inspect.camera.base import EndOfStream, Frame, FrameSource
from edge_inspect.errors import CameraError
from edge_inspect.protocol.messages import HeartbeatMsg, VerdictMsg, check_status, dumps_json


class ScriptedSource(FrameSource):
    """Frames from ``images`` (cycled) with seq numbers ``seqs`` (default 0, 1, 2, ...).

    count: frames before EndOfStream (None: endless). interval_s: pacing between frames.
    read_errors: {read_call_index: exception} raised instead of a frame (the frame is not consumed).
    open_failures: how many open() calls fail with CameraError before one succeeds.
    reopen_failures: how many open() calls after the first successful one fail (a camera lost for a while).
    """

    def __init__(self, images, count: int | None = 10, seqs=None, interval_s: float = 0.0, read_errors=None,
                 open_failures: int = 0, camera_id: str = "cam-test", reopen_failures: int = 0):
        self.images = images if isinstance(images, list) else [images]
        self.count, self.seqs, self.interval_s = count, seqs, interval_s
        self.read_errors = dict(read_errors or {})
        self.open_failures = open_failures
        self.reopen_failures = reopen_failures
        self.opened_once = False
        self.camera_id = camera_id
        self.opens = self.closes = self.reads = 0
        self.delivered: list[int] = []
        self.triggers: list[str | None] = []
        self.is_open = False
        self._next = 0
        self._lock = threading.Lock()

    def open(self) -> None:
        self.opens += 1
        if self.open_failures > 0:
            self.open_failures -= 1
            raise CameraError("fake camera not reachable")
        if self.opened_once and self.reopen_failures > 0:
            self.reopen_failures -= 1
            raise CameraError("fake camera not reachable")
        self.is_open = self.opened_once = True

    def read(self, timeout: float = 1.0):
        assert self.is_open, "read() on a closed source"
        call = self.reads
        self.reads += 1
        if call in self.read_errors:
            raise self.read_errors[call]
        if self.count is not None and self._next >= self.count:
            raise EndOfStream(next_seq=self.seqs[-1] + 1 if self.seqs else self.count)
        if self.interval_s:
            time.sleep(self.interval_s)
        i = self._next
        self._next += 1
        seq = self.seqs[i] if self.seqs is not None else i
        self.delivered.append(seq)
        return Frame(self.camera_id, seq, time.monotonic(), time.time(), self.images[i % len(self.images)])

    def close(self) -> None:
        self.closes += 1
        self.is_open = False

    def trigger(self, part_id=None) -> None:
        self.triggers.append(part_id)


class RecordingPublisher:
    """A VerdictSink that records verdicts and heartbeats. Like the real publisher it owns the heartbeat
    clock: a thread asks the attached status provider every ``heartbeat_s`` (and at once on ``beat_soon``),
    and ``close`` records a final beat with state "stopped". ``threads``: the threads that called publish."""

    def __init__(self, publish_delay_s: float = 0.0, heartbeat_s: float = 0.05):
        self.verdicts = []
        self.heartbeats = []
        self.closed = False
        self.publish_delay_s = publish_delay_s
        self.heartbeat_s = heartbeat_s
        self.threads = set()
        self._provider = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._clock = None

    def publish(self, verdict) -> None:
        assert not self.closed, "publish after close"
        self.threads.add(threading.current_thread().name)
        if self.publish_delay_s:
            time.sleep(self.publish_delay_s)
        self.verdicts.append(verdict)

    def attach_status(self, provider) -> None:
        self._provider = provider
        if self._clock is None:
            self._clock = threading.Thread(target=self._beats, name="fake-publisher", daemon=True)
            self._clock.start()

    def beat_soon(self) -> None:
        self._wake.set()

    def _beat(self, final: bool = False) -> None:
        """Refuses what the real publisher refuses (non-JSON, NaN, a status the heartbeat schema rejects)."""
        status = dict(self._provider())
        if final:
            status["state"] = "stopped"
        dumps_json(status)
        check_status(status)
        self.heartbeats.append(status)

    def _beats(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.heartbeat_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._beat()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._clock is not None:
            self._clock.join(5)
            self._beat(final=True)
        self.closed = True


class RecordingNotifier:
    def __init__(self):
        self.events = []

    def ready(self):
        self.events.append("ready")

    def watchdog(self):
        self.events.append("watchdog")

    def status(self, text):
        self.events.append(f"status:{text}")

    def stopping(self):
        self.events.append("stopping")

    def watchdog_interval_s(self):
        return None


class WrappedBackend(Backend):
    """Delegates to a real backend; can sleep, raise or hang on chosen infer calls (0-based, after warm-up)."""

    name = "wrapped"

    def __init__(self, inner: Backend, delay_s: float = 0.0, fail_calls=(), hang_calls=None, warmup_calls: int = 0):
        super().__init__(inner.model_dir, inner.manifest)
        self.inner = inner
        self.delay_s = delay_s
        self.fail_calls = set(fail_calls)
        self.hang_calls = dict(hang_calls or {})
        self.warmup_calls = warmup_calls
        self.calls = 0
        self.loaded = self.closed = False

    def load(self) -> None:
        self.inner.load()
        self.loaded = True

    def infer(self, inputs):
        call = self.calls - self.warmup_calls
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if call in self.hang_calls:
            time.sleep(self.hang_calls[call])
        if call in self.fail_calls:
            raise RuntimeError(f"injected failure on call {call}")
        return self.inner.infer(inputs)

    def close(self) -> None:
        self.inner.close()
        self.closed = True


def grey(h: int, w: int, blob: bool = False) -> np.ndarray:
    """(h, w, 3) uint8 BGR near the ImageNet mean (tiny model score ≈ 0), optionally with a white centre blob."""
    img = np.full((h, w, 3), 124, np.uint8)
    if blob:
        img[h * 3 // 8 : h * 5 // 8, w * 3 // 8 : w * 5 // 8] = 255
    return img


def model_variant(src: Path, dst: Path, **calibration) -> Path:
    """A copy of the model folder ``src`` at ``dst`` with calibration fields replaced in the raw manifest JSON
    (so NaN and Infinity can be written, as a hand-edited or foreign manifest might hold them)."""
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    raw = json.loads(path.read_text())
    raw["calibration"].update(calibration)
    path.write_text(json.dumps(raw, indent=2))  # allow_nan: NaN / Infinity tokens on purpose
    return dst


class Wire:
    """A SUB socket in a thread, subscribed to a real publisher: every verdict and heartbeat on the wire,
    decoded and validated by the message models."""

    def __init__(self, endpoint: str):
        import zmq

        self.verdicts: list[VerdictMsg] = []
        self.heartbeats: list[HeartbeatMsg] = []
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if not self._sub.poll(20):
                continue
            frames = self._sub.recv_multipart()
            if frames[0].startswith(b"verdict."):
                self.verdicts.append(VerdictMsg.from_frames(frames))
            else:
                self.heartbeats.append(HeartbeatMsg.from_frames(frames))

    def close(self, grace_s: float = 0.0):
        """Stop after ``grace_s`` seconds more of listening (for messages still in flight)."""
        time.sleep(grace_s)
        self._stop.set()
        self._thread.join()
        self._sub.close(linger=0)
        self._ctx.term()


"""Building blocks of the streaming pipeline: the job passed between stages, the loaded model,
the bounded queues with their drop policy, and the in-flight guard that times out inferences.

The stage threads themselves live in ``runner.py``; everything here is small and unit-testable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import Backend
from ..camera.base import Frame
from ..decision import Thresholds
from ..errors import EdgeInspectError, ModelError
from ..manifest import Manifest, load_manifest
from ..preprocess import preprocess

log = logging.getLogger(__name__)

END = object()  # end-of-stream marker; travels through every queue after the last job

BackendFactory = Callable[[Path, Manifest], Backend]


@dataclass
class LoadedModel:
    """One model folder with its loaded backend and the thresholds in force for it.

    ``thresholds`` is an immutable value replaced as a whole (by set_threshold), so a reader always
    sees a consistent (image, pixel) pair. ``generation`` increases with every reload.
    """

    model_dir: Path
    manifest: Manifest
    backend: Backend
    thresholds: Thresholds
    generation: int = 0
    warmup_ms: float = 0.0

    def describe(self) -> dict:
        return {
            "model_id": self.manifest.model_id,
            "model_version": self.manifest.model_version,
            "model_dir": str(self.model_dir),
            "backend": self.backend.name,
            "generation": self.generation,
            "threshold": {"image": self.thresholds.image, "pixel": self.thresholds.pixel,
                          "source": self.thresholds.source},
        }


def warm_up(backend: Backend, manifest: Manifest, runs: int = 2) -> float:
    """Run ``runs`` inferences on a mid-grey frame (first-call allocations, engine/JIT set-up); ms taken."""
    spec = manifest.input
    x = preprocess(np.full((spec.height, spec.width, 3), 128, np.uint8), spec)
    t0 = time.perf_counter()
    for _ in range(runs):
        backend.infer({spec.name: x})
    return (time.perf_counter() - t0) * 1000.0


def load_model(model_dir: str | Path, backend_factory: BackendFactory, image_threshold: float | None = None,
               pixel_threshold: float | None = None, generation: int = 0, warmup_runs: int = 2,
               backend: Backend | None = None) -> LoadedModel:
    """Read the manifest, check the thresholds, open + load + warm up the backend.

    ModelError (naming the folder) on any load failure; ConfigError when a configured threshold override
    is not usable with this model (Thresholds.check: finite, not below the manifest's lower bound).
    EdgeInspectError subclasses (e.g. DependencyError for a missing TensorRT) pass through unchanged.
    The thresholds are checked before any backend is made, so a refused model costs nothing; on any
    failure the backend (given or made) is closed.

    ``backend``: an already constructed (unloaded) backend for ``model_dir``; else the factory makes one.
    The thresholds are the manifest's, each replaced by its configured override when not None.
    """
    model_dir = Path(model_dir)
    try:
        manifest = backend.manifest if backend is not None else load_manifest(model_dir)
        thresholds = Thresholds.from_manifest(manifest, image_threshold, pixel_threshold, source="config")
        backend = backend if backend is not None else backend_factory(model_dir, manifest)
    except BaseException as exc:
        _close_quietly(backend)
        if isinstance(exc, EdgeInspectError) or not isinstance(exc, Exception):
            raise
        raise ModelError(f"{model_dir}: cannot open model: {exc}") from exc
    try:
        backend.load()
        warmup_ms = warm_up(backend, manifest, warmup_runs)
    except Exception as exc:
        _close_quietly(backend)
        if isinstance(exc, EdgeInspectError):  # keeps its own type and exit code (DependencyError: 3)
            raise
        raise ModelError(f"{model_dir}: model failed to load or warm up: {exc}") from exc
    log.info("model %s v%s loaded from %s on %s (warm-up %.1f ms, threshold %.4g)", manifest.model_id,
             manifest.model_version, model_dir, backend.name, warmup_ms, thresholds.image)
    return LoadedModel(model_dir, manifest, backend, thresholds, generation, warmup_ms)


def _close_quietly(backend: Backend | None) -> None:
    """Close a backend that failed to load; the load error is the one to report, not this one."""
    if backend is None:
        return
    try:
        backend.close()
    except Exception:  # the load error is the one to report; this one is only logged
        log.debug("closing a backend that failed to load also failed", exc_info=True)


@dataclass
class Job:
    """One frame on its way through the stages.

    ``x``: (1, 3, H, W) float32 model input, made with ``model``'s input spec. ``outputs``: backend
    result. ``error``: why the frame cannot be judged (it then becomes an "unknown" verdict).
    ``latency_ms``: per stage, filled as the job moves along.
    """

    frame: Frame
    t_taken: float  # time.monotonic() when taken from the source
    model: LoadedModel | None = None
    x: np.ndarray | None = None
    outputs: dict | None = None
    error: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)


class StageQueue:
    """A bounded FIFO between two stages.

    ``put`` blocks while full (back-pressure); ``put_latest`` never blocks: it removes the oldest
    waiting items to make room and returns them so the caller can count them as drops.
    Only one thread may call ``put_latest`` on a queue (single producer), which makes it race-free.
    """

    def __init__(self, maxsize: int):
        self._q: queue.Queue = queue.Queue(maxsize)
        self.maxsize = maxsize

    def put(self, item) -> None:
        self._q.put(item)

    def put_latest(self, item) -> list:
        dropped = []
        while True:
            try:
                self._q.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    dropped.append(self._q.get_nowait())
                except queue.Empty:  # the consumer took it meanwhile: there is room now
                    pass

    def get(self, timeout: float | None = None):
        """The next item; raises queue.Empty after ``timeout`` seconds (None: wait forever)."""
        return self._q.get(timeout=timeout)

    def get_nowait(self):
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()


class InflightGuard:
    """Tracks the one inference in progress so another thread can time it out.

    The inference thread calls ``begin(job)`` then ``finish()``; a watcher calls ``expire(timeout)``.
    Exactly one of them wins the job: ``finish()`` returns False when ``expire`` claimed it first
    (the watcher then publishes an "unknown" verdict and the late result is discarded).
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._job: Job | None = None  # None once finished or claimed by expire
        self._t0 = 0.0
        self._running = False  # an inference call is in progress (even after expire claimed its job)

    def begin(self, job: Job) -> None:
        with self._lock:
            self._job, self._t0, self._running = job, self._clock(), True

    def finish(self) -> bool:
        with self._lock:
            mine = self._job is not None
            self._job, self._running = None, False
            return mine

    def expire(self, timeout_s: float) -> Job | None:
        """Claim and return the in-flight job when it has run longer than ``timeout_s``, else None."""
        with self._lock:
            if self._job is None or self._clock() - self._t0 <= timeout_s:
                return None
            job, self._job = self._job, None
            return job

    def busy_for(self) -> float:
        """Seconds the current inference call has been running, timed out or not (0 when idle)."""
        with self._lock:
            return self._clock() - self._t0 if self._running else 0.0

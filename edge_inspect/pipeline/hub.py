"""One model in memory for several cameras: the inference hub and the backend proxies it hands out.

    camera A inference thread ─┐                      ┌─ real Backend (model folder X)
    camera B inference thread ─┼─► InferenceHub ─────►┤
    camera C inference thread ─┘   (one thread)       └─ real Backend (model folder Y)

Each camera's Pipeline is unchanged: it gets a ``HubBackend`` (a Backend) instead of a real one, loads,
warms up, reloads and closes it as usual. ``HubBackend.infer`` hands the tensor to the hub and waits for
its result. The hub owns one real backend per distinct model folder (shared by every camera on it,
reference-counted: the last camera to let go closes it) and one thread that runs them:

  batching  the requests waiting for the same real backend run as one batch along axis 0 (the graphs have
            a dynamic batch axis); outputs are split back per request. When fewer cameras than share the
            model are waiting, the hub waits up to ``max_wait_s`` for the others (0: never waits); a model
            used by one camera never waits, so a lone camera's latency does not rise.
  fairness  at most one request per camera in a batch, oldest first: each camera's pipeline has at most
            one inference in flight, so a fast free-running camera cannot push a triggered one out; the
            triggered frame is in the next batch at the latest. A frame that misses its deadline is the
            pipeline's inference timeout (``pipeline.infer_timeout_s``): a counted "unknown".
  errors    a batch whose call fails is run again one request at a time, so a failure is charged to the
            frame that caused it and the others still get their scores.

A reload that names a folder whose files changed since it was loaded gets a new real backend (the folder's
file sizes and modification times are part of the key), so reloading a re-exported model loads it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import Backend
from ..errors import BackendError, ModelError
from ..manifest import Manifest
from ..preprocess import split_outputs
from .stages import BackendFactory

log = logging.getLogger(__name__)


def folder_key(model_dir: Path) -> tuple:
    """The identity of a loaded model: the folder and the size and mtime of each file in it."""
    root = Path(model_dir).resolve()
    try:
        files = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file()))
    except OSError:
        files = ()
    return (str(root), files)


@dataclass
class _Shared:
    """One real backend and the cameras holding it."""

    key: tuple
    backend: Backend
    holders: set[str] = field(default_factory=set)  # camera ids of the HubBackends loaded on it
    users: set[str] = field(default_factory=set)  # every camera that ever held it
    loaded: bool = True
    max_batch: int = 8
    batches: int = 0
    images: int = 0


@dataclass
class _Request:
    shared: _Shared
    camera_id: str
    inputs: dict[str, np.ndarray]
    t_submit: float
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


class InferenceHub:
    """Shared real backends and the one thread that runs them in batches (see the module docstring).

    backend_factory  (model_dir, manifest) -> unloaded real Backend (e.g. backends.select.open_backend).
    max_wait_s       longest wait for the other cameras' frames once one is ready (0: no wait).
    max_batch        most frames in one call (a TensorRT engine's profile may cap the batch); None: per model,
                     ``auto_max_batch`` of its backend (1 on ONNX Runtime's CPU, 8 otherwise).
    """

    def __init__(self, backend_factory: BackendFactory, max_wait_s: float = 0.002, max_batch: int | None = 8):
        if max_wait_s < 0 or (max_batch is not None and max_batch < 1):
            raise ValueError("max_wait_s must be >= 0 and max_batch >= 1")
        self._factory = backend_factory
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._shared: dict[tuple, _Shared] = {}
        self._history: list[_Shared] = []  # every model loaded in this run, for models()
        self._load_lock = threading.Lock()  # loads one model at a time; never held by the hub thread
        self._cv = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="edge-inspect-hub", daemon=True)
        self._thread.start()

    # ---- what pipelines use --------------------------------------------------------------------

    def factory_for(self, camera_id: str) -> BackendFactory:
        """A BackendFactory (for Pipeline's ``backend_factory``: reload) making this camera's HubBackends."""
        return lambda model_dir, manifest: HubBackend(self, camera_id, model_dir, manifest)

    def backend(self, camera_id: str, model_dir: str | Path, manifest: Manifest) -> HubBackend:
        """An unloaded Backend for ``camera_id`` on ``model_dir``, served by this hub."""
        return HubBackend(self, camera_id, model_dir, manifest)

    def models(self, loaded_only: bool = True) -> list[dict]:
        """The real backends held (or every one of this run): folder, backend name, cameras using it now,
        cameras that ever used it, whether it is still loaded, backend calls, frames run, mean batch size."""
        with self._load_lock:
            shared = [s for s in self._history if s.loaded or not loaded_only]
        return [{"model_dir": s.key[0], "backend": s.backend.name, "cameras": sorted(s.holders),
                 "used_by": sorted(s.users), "loaded": s.loaded, "max_batch": s.max_batch,
                 "batches": s.batches, "images": s.images,
                 "mean_batch": round(s.images / s.batches, 3) if s.batches else 0.0} for s in shared]

    def close(self) -> None:
        """Run what is already waiting, stop the thread (later requests fail with BackendError), close every
        real backend."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=10.0)
        with self._load_lock:
            shared, self._shared = list(self._shared.values()), {}
            for s in shared:
                s.loaded = False
        for s in shared:
            _close_quietly(s.backend)

    # ---- HubBackend's side -----------------------------------------------------------------------

    def _acquire(self, camera_id: str, model_dir: Path, manifest: Manifest) -> _Shared:
        key = folder_key(model_dir)
        with self._load_lock:
            shared = self._shared.get(key)
            if shared is None:
                backend = self._factory(Path(model_dir), manifest)
                try:
                    backend.load()
                except BaseException:
                    _close_quietly(backend)
                    raise
                limit = self.max_batch if self.max_batch is not None else auto_max_batch(backend)
                shared = self._shared[key] = _Shared(key, backend, max_batch=limit)
                self._history.append(shared)
                log.info("hub: model %s loaded on %s for camera %s", key[0], backend.name, camera_id)
            else:
                log.info("hub: camera %s shares the model already loaded from %s", camera_id, key[0])
            shared.holders.add(camera_id)
            shared.users.add(camera_id)
            return shared

    def _release(self, shared: _Shared, camera_id: str) -> None:
        with self._load_lock:
            shared.holders.discard(camera_id)
            last = not shared.holders and self._shared.get(shared.key) is shared
            if last:
                del self._shared[shared.key]
                shared.loaded = False
        if last:  # no camera can submit to it any more; a request of its own may still be running
            with self._cv:
                while any(r.shared is shared for r in self._pending) and not self._closed:
                    self._cv.wait(0.05)
            _close_quietly(shared.backend)
            log.info("hub: model %s closed (no camera uses it)", shared.key[0])

    def _submit(self, shared: _Shared, camera_id: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req = _Request(shared, camera_id, inputs, time.monotonic())
        with self._cv:
            if self._closed:
                raise BackendError("the inference hub is closed")
            self._pending.append(req)
            self._cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.outputs

    # ---- the hub thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._execute(batch)
            except Exception:  # a bug here: its frames already got the error; the other cameras go on
                log.critical("hub: a batch of %d frame(s) failed unexpectedly", len(batch), exc_info=True)

    def _next_batch(self) -> list[_Request] | None:
        """The oldest request with, for the same model, the oldest request of each other camera; waits up to
        max_wait_s for the cameras sharing that model that have nothing waiting yet. None once closed."""
        with self._cv:
            while not self._pending:
                if self._closed:
                    return None
                self._cv.wait()
            shared = self._pending[0].shared
            deadline = time.monotonic() + self.max_wait_s
            while True:
                batch = self._pick(shared)
                want = min(len(shared.holders), shared.max_batch)
                left = deadline - time.monotonic()
                if len(batch) >= want or left <= 0 or self._closed:
                    break
                self._cv.wait(left)
            for r in batch:
                self._pending.remove(r)
            self._cv.notify_all()  # _release may wait for a model's last request to leave the queue
            return batch

    def _pick(self, shared: _Shared) -> list[_Request]:
        seen: set[str] = set()
        batch = []
        for r in self._pending:
            if r.shared is shared and r.camera_id not in seen:
                seen.add(r.camera_id)
                batch.append(r)
                if len(batch) == shared.max_batch:
                    break
        return batch

    def _execute(self, batch: list[_Request]) -> None:
        shared = batch[0].shared
        calls = 1
        try:
            if len(batch) == 1 or not _stackable(batch):
                calls = len(batch)
                for r in batch:
                    self._run_one(r)
            else:
                try:
                    outputs = shared.backend.infer(_stack(batch))
                    parts = split_outputs(outputs, [_batch_len(r.inputs) for r in batch])
                except Exception as exc:  # noqa: BLE001 - retried one by one so the failing frame is the one told
                    log.debug("hub: a batch of %d failed (%s); running it one frame at a time", len(batch), exc)
                    calls += len(batch)
                    for r in batch:
                        self._run_one(r)
                else:
                    for r, out in zip(batch, parts, strict=True):
                        r.outputs = out
            shared.batches += calls
            shared.images += len(batch)
        except BaseException as exc:  # a bug here must not leave a camera's thread waiting for ever
            for r in batch:
                if r.outputs is None and r.error is None:
                    r.error = exc
            raise
        finally:
            for r in batch:
                r.done.set()

    @staticmethod
    def _run_one(r: _Request) -> None:
        try:
            r.outputs = r.shared.backend.infer(r.inputs)
        except Exception as exc:  # noqa: BLE001 - handed to the camera's thread, which makes it an "unknown"
            r.error = exc


class HubBackend(Backend):
    """A camera's view of a model served by an InferenceHub: load() shares (or loads) the real backend,
    infer() runs through the hub's thread (batched with other cameras), close() lets go of it."""

    def __init__(self, hub: InferenceHub, camera_id: str, model_dir: str | Path, manifest: Manifest):
        super().__init__(Path(model_dir), manifest)
        self.hub = hub
        self.camera_id = camera_id
        self._shared: _Shared | None = None
        self._name = "hub"

    @property
    def name(self) -> str:  # the real backend's name (status, summary), once loaded
        return self._name

    def load(self) -> None:
        if self._shared is None:
            self._shared = self.hub._acquire(self.camera_id, self.model_dir, self.manifest)
            self._name = self._shared.backend.name

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._shared is None:
            raise ModelError(f"{self.model_dir}: backend not loaded")
        return self.hub._submit(self._shared, self.camera_id, inputs)

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            self.hub._release(shared, self.camera_id)


def auto_max_batch(backend: Backend) -> int:
    """1 for ONNX Runtime on the CPU, 8 for anything else (TensorRT). Measured on a 2-core CPU with a real
    RSTPM model (benchmarks/multi_camera.py): batch 4 costs only ~15 % less per image than batch 1, and its
    activations raise the resident set of a 4-camera station from ~1.2x to ~2.2x that of one camera."""
    return 1 if backend.name == "onnxruntime" else 8


def _batch_len(inputs: dict[str, np.ndarray]) -> int:
    return int(next(iter(inputs.values())).shape[0])


def _stackable(batch: list[_Request]) -> bool:
    """Same input names, and shapes equal except along the batch axis."""
    first = batch[0].inputs
    for r in batch[1:]:
        if r.inputs.keys() != first.keys():
            return False
        for k, v in r.inputs.items():
            if v.shape[1:] != first[k].shape[1:] or v.dtype != first[k].dtype:
                return False
    return True


def _stack(batch: list[_Request]) -> dict[str, np.ndarray]:
    """(b_i, C, H, W) per request → (sum b_i, C, H, W) per input name."""
    return {k: np.concatenate([r.inputs[k] for r in batch], axis=0) for k in batch[0].inputs}


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        log.warning("hub: closing a backend failed", exc_info=True)

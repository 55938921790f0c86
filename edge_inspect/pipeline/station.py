"""A station: several cameras in one process, one model in memory, one PUB socket, one systemd service.

    camera A ─ Pipeline ─┐                    ┌─ publisher.channel(A) ─┐
    camera B ─ Pipeline ─┼─ InferenceHub ─────┼─ publisher.channel(B) ─┼─ one PUB socket
    camera C ─ Pipeline ─┘  (shared model)    └─ publisher.channel(C) ─┘

Each camera keeps its own Pipeline (pipeline.runner): capture thread, drop policy, counters, sequence
numbers, reconnect state, thresholds, reloads and heartbeat (``heartbeat.<line>.<camera>``). What they
share is owned here:
  hub        one real backend per distinct model folder, batched across cameras (pipeline.hub);
  publisher  one socket, one topic and msg_seq per camera (protocol.publisher.VerdictPublisher.channel);
  notifier   one service: READY=1 once every camera is open and the first frame came; WATCHDOG=1 only
             while every camera's loop is alive (a camera whose stream ended on purpose no longer counts;
             a camera whose loop died or stalls stops the pings); STATUS= one part per camera.

A camera that cannot work (its pipeline fails: a missing library, a crashed stage) stops the whole
station, as it stops a one-camera ``run``: systemd's Restart= then starts it again. A camera that is lost
is not a failure: its pipeline reconnects while the others go on.

Result observers (pipeline.observers: the live view, the defect archive, a local window) are shared: every
camera's Pipeline offers its parts to the same observers, each part carrying its camera id. An observer
takes parts from one thread at a time (``offer`` is O(1) and not made for concurrent callers), so the
station hands each camera's pipeline a ``_SerialObserver`` that offers under one lock per observer.

Control commands take an optional camera id; ``trigger``, ``set_threshold`` and ``reload`` must name one
when the station has several cameras (a threshold or model is a camera's, not the station's).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..camera.base import FrameSource
from ..errors import ConfigError, ProtocolError
from ..manifest import load_manifest
from ..settings import Settings
from .hub import InferenceHub
from .interfaces import Notifier, NullNotifier
from .runner import Pipeline, _watchdog_pace

log = logging.getLogger(__name__)

_MONITOR_TICK_S = 0.1


@dataclass
class StationCamera:
    """One camera of a station: its id, its unopened source and its own settings (camera, pipeline mode,
    model folder and thresholds already applied; see pipeline.station_settings.camera_settings)."""

    camera_id: str
    source: FrameSource
    settings: Settings


class _CameraNotifier:
    """What one camera's Pipeline sees as its Notifier; the station decides what reaches systemd."""

    def __init__(self, station: Station, camera_id: str):
        self._station, self.camera_id = station, camera_id

    def ready(self) -> None:
        self._station._camera_ready(self.camera_id)

    def watchdog(self) -> None:
        self._station._camera_alive(self.camera_id)

    def status(self, text: str) -> None:
        self._station._camera_status(self.camera_id, text)

    def stopping(self) -> None:
        self._station._stopping()

    def watchdog_interval_s(self) -> float | None:
        return self._station.notifier.watchdog_interval_s()


class _SerialObserver:
    """One shared observer as a camera's Pipeline sees it: ``offer`` under the observer's lock, so the decide
    threads of several cameras never offer at once (the observers count and replace slots without locks)."""

    def __init__(self, observer, lock: threading.Lock):
        self.observer, self._lock = observer, lock
        self.name = observer.name

    def offer(self, result) -> None:
        with self._lock:
            self.observer.offer(result)

    def stats(self) -> dict:
        return self.observer.stats()


class Station:
    """N cameras → verdicts on one publisher, through one InferenceHub, under one service.

    publisher: a VerdictPublisher (or anything with ``channel(camera_id)`` → VerdictSink and ``close()``);
    closed with the hub once every camera's pipeline has ended. Used like a Pipeline: start / wait / stop /
    abandon / summary / fatal_error, and the control target (status / trigger / set_threshold / reload).
    observers: result observers shared by every camera (owned by the caller: started and closed there).
    """

    def __init__(self, cameras: list[StationCamera], publisher, hub: InferenceHub, notifier: Notifier | None = None,
                 observers: list | None = None):
        if not cameras:
            raise ConfigError("a station needs at least one camera")
        ids = [c.camera_id for c in cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"camera ids must be unique; given more than once: {', '.join(dupes)}")
        self.notifier: Notifier = notifier if notifier is not None else NullNotifier()
        self.publisher = publisher
        self.hub = hub
        self._lock = threading.Lock()
        self._alive: dict[str, float] = {}
        self._status_text: dict[str, str] = {c.camera_id: "starting" for c in cameras}
        self._ready_sent = False
        self._all_started = False
        self._any_frame = False
        self._stopping_sent = False
        self._stop_requested = False
        self._done = threading.Event()
        self._monitor: threading.Thread | None = None
        self._fatal: BaseException | None = None
        self.observers = list(observers or [])
        shared = [_SerialObserver(o, threading.Lock()) for o in self.observers]
        self.pipelines: dict[str, Pipeline] = {}
        for cam in cameras:
            model_dir = cam.settings.model.dir
            if model_dir is None:
                raise ConfigError(f"camera {cam.camera_id}: no model folder")
            backend = hub.backend(cam.camera_id, model_dir, load_manifest(model_dir))
            self.pipelines[cam.camera_id] = Pipeline(
                cam.source, backend, publisher.channel(cam.camera_id), cam.settings,
                notifier=_CameraNotifier(self, cam.camera_id), backend_factory=hub.factory_for(cam.camera_id),
                observers=shared)
        self._watchdog_window_s = 3 * _watchdog_pace(self.notifier) + 0.25

    @property
    def camera_ids(self) -> list[str]:
        return list(self.pipelines)

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every camera's pipeline in turn (model shared through the hub, then the camera opened).
        When one cannot start, the ones already started are stopped, everything is closed, and its error
        is raised."""
        started: list[Pipeline] = []
        try:
            for cid, p in self.pipelines.items():
                if self._stop_requested:
                    p.stop()  # never started: closes what it owns
                    continue
                log.info("station: starting camera %s", cid)
                p.start()
                started.append(p)
        except BaseException as exc:
            self._fatal = exc
            for p in self.pipelines.values():
                p.stop(wait=False)
            for p in started:
                p.stop(wait=True)
            for p in self.pipelines.values():
                if p not in started:
                    p.stop()  # never started: closes its backend proxy and its channel
            self._close_shared()
            self._done.set()
            raise
        with self._lock:
            self._all_started = True
            send_ready = self._any_frame and not self._ready_sent
            self._ready_sent = self._ready_sent or send_ready
        if send_ready:
            self._notify(self.notifier.ready)
        self._monitor = threading.Thread(target=self._watch, name="edge-inspect-station", daemon=True)
        self._monitor.start()

    def run(self) -> dict:
        self.start()
        while not self._done.wait(0.2):
            pass
        return self.summary()

    def wait(self, timeout: float | None = None) -> bool:
        """True once every camera's pipeline has drained and the shared publisher and hub are closed."""
        return self._done.wait(timeout)

    def stop(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop every camera (each drains: every frame taken gets its verdict); see Pipeline.stop."""
        self._stop_requested = True
        for p in self.pipelines.values():
            p.stop(wait=False)
        if self._monitor is None:  # never started (or failed to): nothing else will close the shared parts
            for p in self.pipelines.values():
                p.stop()
            if not self._done.is_set():
                self._close_shared()
                self._done.set()
            return True
        if not wait:
            return self._done.is_set()
        drained = all([p.stop(wait=True, timeout=timeout) for p in self.pipelines.values()])
        self._done.wait(5.0)
        return drained and self._done.is_set()

    def abandon(self) -> None:
        for p in self.pipelines.values():
            p.abandon()

    @property
    def fatal_error(self) -> BaseException | None:
        if self._fatal is not None:
            return self._fatal
        for p in self.pipelines.values():
            if p.fatal_error is not None:
                return p.fatal_error
        return None

    def _watch(self) -> None:
        """Stop the station when a camera fails; close the shared parts once every camera has ended."""
        stopped_for: str | None = None
        while True:
            pending = [p for p in self.pipelines.values() if not p.wait(0)]
            if not pending:
                break
            if stopped_for is None:
                for cid, p in self.pipelines.items():
                    if p.fatal_error is not None:
                        stopped_for = cid
                        log.error("station: camera %s failed (%s); stopping every camera", cid, p.fatal_error)
                        for other in self.pipelines.values():
                            other.stop(wait=False)
                        break
            pending[0].wait(_MONITOR_TICK_S)
        self._close_shared()
        self._done.set()

    def _close_shared(self) -> None:
        for what, obj in (("publisher", self.publisher), ("inference hub", self.hub)):
            try:
                obj.close()
            except Exception:
                log.warning("station: closing the %s failed", what, exc_info=True)

    # ---- the service manager ---------------------------------------------------------------------

    _notify = staticmethod(Pipeline._notify)  # a failing sd_notify must not disturb inspection

    def _camera_ready(self, camera_id: str) -> None:
        with self._lock:
            self._any_frame = True
            send = self._all_started and not self._ready_sent
            self._ready_sent = self._ready_sent or send
        if send:
            self._notify(self.notifier.ready)

    def _camera_alive(self, camera_id: str) -> None:
        """One camera's loop is alive; WATCHDOG=1 when every camera's is (or has ended on purpose)."""
        now = time.monotonic()
        with self._lock:
            self._alive[camera_id] = now
            if not self._all_started:
                return
        for cid, p in self.pipelines.items():
            if p.wait(0) and p.fatal_error is None:
                continue  # its stream ended on purpose: not a stall
            if p.fatal_error is not None or now - self._alive.get(cid, -1e9) > self._watchdog_window_s:
                return
        self._notify(self.notifier.watchdog)

    def _camera_status(self, camera_id: str, text: str) -> None:
        with self._lock:
            self._status_text[camera_id] = text
            line = " | ".join(f"{cid}: {t}" for cid, t in self._status_text.items())
        self._notify(self.notifier.status, line if len(self._status_text) > 1 else text)

    def _stopping(self) -> None:
        with self._lock:
            first, self._stopping_sent = not self._stopping_sent, True
        if first:
            self._notify(self.notifier.stopping)

    # ---- runtime control (any thread) ------------------------------------------------------------

    def _pick(self, camera: str | None, cmd: str) -> Pipeline:
        if camera is None:
            if len(self.pipelines) == 1:
                return next(iter(self.pipelines.values()))
            raise ProtocolError(f"{cmd}: this station has {len(self.pipelines)} cameras; name one with "
                                f"'camera' ({', '.join(self.pipelines)})")
        p = self.pipelines.get(camera)
        if p is None:
            raise ProtocolError(f"{cmd}: no camera {camera!r} on this station; cameras: {', '.join(self.pipelines)}")
        return p

    def status(self, camera: str | None = None) -> dict:
        """One camera's Pipeline.status(); with no camera named and several cameras: every camera's, under
        ``cameras``, with the station's state and the shared models (``hub``)."""
        if camera is not None or len(self.pipelines) == 1:
            return self._pick(camera, "status").status()
        cams = {cid: p.status() for cid, p in self.pipelines.items()}
        return {"state": _station_state([s["state"] for s in cams.values()]), "cameras": cams,
                "hub": self.hub.models()}

    def trigger(self, part_id: str | None = None, camera: str | None = None) -> None:
        self._pick(camera, "trigger").trigger(part_id)

    def set_threshold(self, image: float | None = None, pixel: float | None = None,
                      camera: str | None = None) -> dict:
        out = self._pick(camera, "set_threshold").set_threshold(image, pixel)
        return {**out, "camera": camera} if camera is not None else out

    def reload(self, model_dir: str | Path, timeout: float | None = None, camera: str | None = None) -> dict:
        out = self._pick(camera, "reload").reload(model_dir, timeout)
        return {**out, "camera": camera} if camera is not None else out

    # ---- results ---------------------------------------------------------------------------------

    def summary(self) -> dict:
        """Every camera's Pipeline.summary() under ``cameras``; ``counters`` and ``in_flight`` summed over
        the cameras; ``hub`` the shared models (batches run, mean batch size)."""
        cams = {cid: p.summary() for cid, p in self.pipelines.items()}
        counters: dict[str, int] = {}
        for s in cams.values():
            for k, v in s["counters"].items():
                counters[k] = counters.get(k, 0) + v
        return {"state": _station_state([s["state"] for s in cams.values()]), "cameras": cams,
                "counters": counters, "in_flight": sum(s["in_flight"] for s in cams.values()),
                "fps": sum(s["fps"] for s in cams.values()), "hub": self.hub.models(loaded_only=False)}


def _station_state(states: list[str]) -> str:
    """The station's state from its cameras': failed if one failed, else the least advanced one."""
    if "failed" in states:
        return "failed"
    for state in ("created", "loading", "starting", "running", "draining", "stopping", "stopped"):
        if state in states:
            return state
    return states[0] if states else "stopped"


def first_camera_id(settings: Settings) -> str:
    """The id of the station's first camera: the shared publisher's own camera (``last`` without a camera)."""
    from .station_settings import camera_entries

    if not settings.cameras:
        raise ConfigError("no cameras configured: add [[cameras]] tables or give --camera more than once")
    return camera_entries(settings.cameras)[0][0]


def build_station(settings: Settings, publisher, notifier: Notifier | None = None, backend_factory=None,
                  open_source=None, observers: list | None = None) -> Station:
    """A Station for ``settings.cameras`` (pipeline.station_settings): one source and Settings per camera,
    one hub (``[station]``) over ``backend_factory`` (default: backends.select.open_backend with ``[model]``),
    ``observers`` offered every camera's parts (cli._outputs.LineOutputs builds them for ``run``).
    Nothing is opened yet but the publisher given; ConfigError for a bad URI or a camera without a model."""
    from .station_settings import camera_entries, camera_settings

    if open_source is None:
        from ..camera.uri import open_source
    if backend_factory is None:
        from ..backends.select import open_backend

        m = settings.model

        def backend_factory(model_dir, manifest):
            return open_backend(model_dir, m.backend, manifest=manifest, threads=m.intra_op_threads)

    cameras = []
    for cid, entry in camera_entries(settings.cameras):
        s = camera_settings(settings, cid, entry)
        if s.model.dir is None:
            raise ConfigError(f"camera {cid}: no model folder; set model_dir in its [[cameras]] table or [model] dir")
        cameras.append(StationCamera(cid, open_source(s.camera), s))
    st = settings.station
    hub = InferenceHub(backend_factory, max_wait_s=st.batch_wait_ms / 1000.0, max_batch=st.max_batch)
    try:
        return Station(cameras, publisher, hub, notifier, observers=observers)
    except BaseException:
        hub.close()
        raise

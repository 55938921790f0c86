"""The running pipeline: four threads joined by bounded queues.

    capture ──q_pre──► preprocess ──q_infer──► inference ──q_pub──► decide ──► publisher (its own thread)

Each stage works on its own frame at the same time, so throughput is set by the slowest stage.
Drop policy (``pipeline.mode``):
  free-run  q_pre holds the newest frame only; an older waiting frame is dropped and counted.
            q_infer holds one preprocessed frame, so preprocessing never runs far ahead of inference.
  lossless  every frame is judged; full queues block the capture thread, which back-pressures the
            source (a real camera then skips frames, which show up as sequence gaps).
  auto      lossless for a recorded source (file://, dir://: its frames wait for us), else free-run.
Invariant, once drained: frames_in == verdicts_out + publish_errors + dropped_queue. verdicts_out (and
its split ok / ng / unknown) counts only verdicts the publisher accepted, with the label it accepted;
a verdict the publisher refused (publish raised) is a publish_error, never counted as judged, and makes
``run`` exit non-zero. Camera sequence gaps are counted apart (dropped_gap): those frames were never taken.
A share of drops above ``pipeline.drop_warn_share`` is a WARNING while running, not only in the summary.

One owner per responsibility:
  camera      the source wrapper (camera.reconnect.ReconnectingSource) opens, reconnects with back-off,
              numbers frames and counts sequence gaps. The capture thread only reads frames: a CameraError
              is a "lost" event (later reads reconnect), state changes arrive as events (a heartbeat goes
              out at once). The pipeline opens the camera once, in ``start``, after the model is loaded;
              a camera never seen in this run fails the start (camera.wait_at_start_s), it is not retried.
  publishing  the publisher (interfaces.VerdictSink) owns the PUB socket, its send queue, the heartbeat
              clock and its own drop count. The decide thread hands it each verdict; the publisher asks
              ``heartbeat_status`` on its clock (and once more when closed, after the final counts).

Threads and their duties:
  capture    read frames from the source wrapper; count frames taken; READY=1 on the first frame (the
             model is loaded and warmed up, and the camera opened, before the threads start).
  preprocess camera image → model input with the current model's input spec.
  inference  backend.infer, one call at a time; swaps a reloaded model between frames; WATCHDOG=1.
  decide     decide, hand the verdict to the publisher (counted once it is accepted), inference timeouts,
             the periodic stats line and STATUS=, the drop watch, and the drift watch (health.drift) on
             the scores of published verdicts.

Runtime control (``status``, ``set_threshold``, ``trigger``, ``reload``) may be called from any thread.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from pathlib import Path

from ..backends.base import Backend
from ..camera.base import EndOfStream, FrameSource
from ..camera.reconnect import ReconnectingSource
from ..decision import Thresholds, decide_restored, unknown_verdict
from ..errors import CameraError, ConfigError, DependencyError, ModelError
from ..health.drift import DriftMonitor
from ..health.memory import release_free_memory
from ..health.stats import DropWatch, PeriodicReporter, PipelineStats
from ..manifest import Manifest
from ..preprocess import preprocess, restore_outputs
from ..settings import Settings
from ..verdict import Verdict
from .interfaces import Notifier, NullNotifier, ResultObserver, VerdictSink
from .observers import PartResult
from .stages import END, BackendFactory, InflightGuard, Job, LoadedModel, StageQueue, load_model

log = logging.getLogger(__name__)

_ABANDONED = "pipeline stopped before this frame was judged (drain timeout)"
_IDLE_TICK_S = 0.05  # how often idle stages wake to check timeouts and swaps
_ABANDON_S = 3.0  # after a drain timeout: how long the decide thread collects the remaining frames
_WATCHDOG_EVERY_S = 0.25  # longest pause between WATCHDOG=1 attempts; the notifier throttles further
_DROP_CHECK_S = 0.25  # how often the drop watch looks at the counters
_LOG_EVERY_PUBLISH_ERROR = 10  # the first publish errors are logged one by one, then every 100th
# The source wrapper's states, as status() and the heartbeat report them.
_CAMERA_STATES = {"connected": "ok", "reconnecting": "reconnecting", "closed": "closed"}


def resolve_mode(mode: str, source: FrameSource) -> str:
    """"free-run" or "lossless": ``mode`` itself, or for "auto" lossless when the source is recorded."""
    if mode != "auto":
        return mode
    return "lossless" if source.recorded else "free-run"


def _watchdog_pace(notifier: Notifier) -> float:
    """Seconds between WATCHDOG=1 attempts: at most half the service's watchdog interval (systemd's
    advice), and never more than _WATCHDOG_EVERY_S."""
    interval = notifier.watchdog_interval_s()
    if interval and interval > 0:
        return min(_WATCHDOG_EVERY_S, interval / 2)
    return _WATCHDOG_EVERY_S


class Pipeline:
    """Frames from ``source`` → verdicts to ``publisher``, until stopped or the source ends.

    Collaborators (injected, so tests use fakes):
      source     FrameSource, unopened; wrapped in a ReconnectingSource unless it is one. ``start`` opens it,
                 the wrapper reconnects it, the pipeline closes it.
      backend    Backend for the model folder, unloaded; the pipeline loads, warms up and closes it.
      publisher  VerdictSink (pipeline.interfaces); closed at the end.
      notifier   optional Notifier (systemd sd_notify).
      backend_factory  (model_dir, manifest) -> unloaded Backend, used by ``reload``; default: open_backend.
      observers  ResultObserver list (pipeline.observers): each published part is offered to them from the
                 decide thread (O(1), no copy); the caller starts and closes them.
    """

    def __init__(self, source: FrameSource, backend: Backend, publisher: VerdictSink, settings: Settings | None = None,
                 notifier: Notifier | None = None, backend_factory: BackendFactory | None = None,
                 observers: list[ResultObserver] | None = None):
        self.observers: list[ResultObserver] = list(observers or [])
        self.settings = settings if settings is not None else Settings()
        self.source = (source if isinstance(source, ReconnectingSource)
                       else ReconnectingSource(source, self.settings.camera))
        self.publisher = publisher
        self.notifier: Notifier = notifier if notifier is not None else NullNotifier()
        self._backend_factory = backend_factory or self._default_backend_factory
        self._initial_backend: Backend | None = backend
        self._model: LoadedModel | None = None
        self._pending_model: LoadedModel | None = None
        self._model_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._swapped = threading.Event()

        p = self.settings.pipeline
        self.mode = resolve_mode(p.mode, self.source)
        self.lossless = self.mode == "lossless"
        self._q_pre = StageQueue(p.queue_size if self.lossless else 1)
        self._q_infer = StageQueue(p.queue_size if self.lossless else 1)
        self._q_pub = StageQueue(max(p.queue_size, 2))
        self._guard = InflightGuard()
        self.stats = self._new_stats()
        self._drops = DropWatch(p.drop_warn_share, quiet_s=p.stats_interval_s)
        self._drift = DriftMonitor(self.settings.drift)
        self._non_finite_logged: list[str] = []  # status fields last sent as null because they were NaN/inf

        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop() gave up waiting: judge nothing more, answer "unknown"
        self._done = threading.Event()
        self._first_frame = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state = "created"
        self._fatal: BaseException | None = None
        self._capture_alive = time.monotonic()
        self._last_watchdog = 0.0
        self._watchdog_every_s = _watchdog_pace(self.notifier)
        self._t_started = 0.0
        self._t_finished: float | None = None
        self.source.add_listener(self._on_camera_change)
        self.publisher.attach_status(self.heartbeat_status)

    def _new_stats(self) -> PipelineStats:
        stats = PipelineStats()
        stats.link_counters(self._camera_counters)  # the camera's counters stay the source wrapper's
        return stats

    def _camera_counters(self) -> dict[str, int]:
        c = self.source.counters
        return {"dropped_gap": c.gaps, "camera_errors": c.errors + c.failed_opens, "reconnects": c.reconnects}

    # ---- lifecycle -------------------------------------------------------------------------

    def _default_backend_factory(self, model_dir: Path, manifest: Manifest) -> Backend:
        from ..backends.select import open_backend

        m = self.settings.model
        return open_backend(model_dir, m.backend, manifest=manifest, threads=m.intra_op_threads)

    def start(self) -> None:
        """Load and warm up the model, open the camera, then start the stage threads.

        Raises (and closes everything) when the model cannot load (ModelError, ConfigError, DependencyError)
        or the camera cannot be opened within camera.wait_at_start_s (CameraError; ConfigError /
        DependencyError when retrying cannot help): a camera never seen in this run is not retried.
        """
        if self._state != "created":
            raise RuntimeError("a Pipeline can be started once")
        backend, self._initial_backend = self._initial_backend, None
        self._state = "loading"  # a stop() from here on (e.g. SIGTERM) lets the threads drain at once
        m = self.settings.model
        try:
            self._model = load_model(backend.model_dir, self._backend_factory, m.image_threshold,
                                     m.pixel_threshold, warmup_runs=self.settings.pipeline.warmup_runs,
                                     backend=backend)
            if not self._stop.is_set():
                self.source.open(wait_s=self.settings.camera.wait_at_start_s)
        except BaseException as exc:  # the caller reports it (``run``: one line and the error's exit code)
            self._fatal = exc
            self._state = "failed"
            self.source.close()
            self._close_all()
            self._done.set()
            raise
        self.stats = self._new_stats()
        self._t_started = time.monotonic()
        self._state = "stopping" if self._stop.is_set() else "starting"
        log.info("mode %s%s", self.mode, f" (auto: {'a recorded source' if self.lossless else 'a camera'})"
                 if self.settings.pipeline.mode == "auto" else "")
        self._notify(self.notifier.status, f"model {self._model.manifest.model_id} loaded; waiting for the first frame")
        for name, target in (("capture", self._capture_loop), ("preprocess", self._preprocess_loop),
                             ("inference", self._infer_loop), ("decide", self._decide_loop)):
            t = threading.Thread(target=self._guarded, args=(name, target), name=f"edge-inspect-{name}", daemon=True)
            self._threads.append(t)
            t.start()

    def run(self) -> dict:
        """start(), wait until the source ends, max_frames are taken or stop() is called; the summary."""
        self.start()
        while not self._done.wait(0.2):
            pass
        return self.summary()

    def stop(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop capture; frames already taken are still judged and published, then all is closed.

        Safe to call from a signal handler with ``wait=False``. Returns True once fully drained
        (False when ``wait`` is False). When the drain takes longer than ``timeout`` (default
        pipeline.drain_timeout_s), e.g. behind a hung backend, the frames still waiting are published
        as "unknown" so each taken frame still gets its verdict; False only if even that fails.
        """
        if self._done.is_set():
            return True
        if not self._stop.is_set():
            log.info("stopping: capture ends, frames already taken are still judged")
            self._stop.set()
            self.source.interrupt()  # a reconnect back-off wait ends now
            if self._state in ("starting", "running"):
                self._state = "stopping"
            self._notify(self.notifier.stopping)
            self._notify(self.publisher.beat_soon)
        if self._state == "created":  # never started: nothing to drain, but close what we own
            self._close_all()
            self._done.set()
            return True
        if not wait:
            return self._done.is_set()
        if self.wait(timeout if timeout is not None else self.settings.pipeline.drain_timeout_s):
            return True
        log.error("drain timed out (inference hung for %.1f s); frames not judged yet become 'unknown'",
                  self._guard.busy_for())
        self._abandon.set()
        return self.wait(_ABANDON_S + 2.0)

    def abandon(self) -> None:
        """Cut a drain in progress short (e.g. a second Ctrl-C): frames not judged yet are published as
        "unknown" now, so each taken frame still gets a verdict and the summary still comes."""
        if self._stop.is_set() and not self._done.is_set() and not self._abandon.is_set():
            log.warning("drain cut short: %d frame(s) not judged yet become 'unknown'", self._unanswered())
            self._abandon.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pipeline has drained and closed (True) or ``timeout`` s passed (False)."""
        return self._done.wait(timeout)

    @property
    def fatal_error(self) -> BaseException | None:
        """Why the pipeline stopped on its own or could not start: a model or camera that cannot work
        (ModelError, CameraError, ConfigError, DependencyError) or an unexpected exception that killed a
        stage thread; None otherwise."""
        return self._fatal

    def _guarded(self, name: str, target) -> None:
        try:
            target()
        except BaseException as exc:  # a bug in a stage: stop everything rather than hang half-alive
            log.critical("pipeline %s thread crashed: %r", name, exc, exc_info=True)
            self._fatal = exc
            self._stop.set()
            self._state = "failed"
            self._done.set()

    @staticmethod
    def _notify(call, *args) -> None:
        """Call a collaborator's method whose failure must not disturb inspection (sd_notify, a heartbeat nudge)."""
        try:
            call(*args)
        except Exception:
            log.debug("%s failed", getattr(call, "__qualname__", call), exc_info=True)

    # ---- capture -----------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        read_timeout = self.settings.camera.read_timeout_s
        max_frames = self.settings.pipeline.max_frames
        taken = 0
        try:
            while not self._stop.is_set():
                self._capture_alive = time.monotonic()
                try:
                    frame = self.source.read(timeout=read_timeout)
                except EndOfStream:
                    log.info("camera %s: end of stream after %d frames", self.source.camera_id, taken)
                    break
                except (ConfigError, DependencyError) as exc:  # found on a reopen: retrying cannot fix these
                    log.error("camera %s cannot be used: %s", self.source.camera_id, exc)
                    self._fatal = exc
                    break
                except CameraError as exc:  # lost, or a reconnect attempt failed: the wrapper tries again
                    log.warning("camera %s: %s", self.source.camera_id, exc)
                    continue
                if frame is None:  # read timeout, or waiting to reconnect
                    continue
                self._take(frame)
                taken += 1
                if max_frames is not None and taken >= max_frames:
                    log.info("max_frames=%d reached", max_frames)
                    break
        finally:
            self._capture_alive = math.inf  # finished on purpose: not a stall
            if self._fatal is not None:
                self._state = "failed"
            elif self._state in ("starting", "running"):
                self._state = "draining"
            self._q_pre.put(END)
            self._close_source()

    def _on_camera_change(self, state: str, error: str | None) -> None:
        """The source wrapper's lost / back event: tell systemd and the subscribers (a heartbeat now)."""
        if state == "reconnecting":
            self._notify(self.notifier.status, f"camera {self.source.camera_id} lost: {error}; reconnecting")
        elif state == "connected" and self.source.counters.reconnects:
            self._notify(self.notifier.status, f"camera {self.source.camera_id} back")
        self._notify(self.publisher.beat_soon)

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            log.warning("closing camera %s failed", self.source.camera_id, exc_info=True)

    def _take(self, frame) -> None:
        """Count one frame taken from the source and queue it (sequence gaps are the source wrapper's)."""
        stats = self.stats
        stats.incr("frames_in")
        if not self._first_frame.is_set():
            self._first_frame.set()
            if self._state == "starting":
                self._state = "running"
            log.info("first frame received (%s, seq %d); ready", "x".join(map(str, frame.image.shape)), frame.seq)
            self._notify(self.notifier.ready)
            self._notify(self.publisher.beat_soon)
        job = Job(frame=frame, t_taken=time.monotonic())
        if self.lossless:
            self._capture_alive = math.inf  # blocked on purpose by back-pressure, not stalled
            self._q_pre.put(job)
            self._capture_alive = time.monotonic()
        else:
            dropped = self._q_pre.put_latest(job)
            if dropped:
                stats.incr("dropped_queue", len(dropped))

    # ---- preprocess --------------------------------------------------------------------------

    def _preprocess_loop(self) -> None:
        while True:
            job = self._q_pre.get()
            if job is END:
                self._q_infer.put(END)
                return
            self._prepare(job, self._model)
            self._q_infer.put(job)

    def _prepare(self, job: Job, model: LoadedModel) -> None:
        t0 = time.monotonic()
        job.latency_ms.setdefault("capture_wait", max(0.0, (t0 - job.frame.t_capture) * 1000.0))
        try:
            job.x = preprocess(job.frame.image, model.manifest.input, channel_order="BGR")
            job.model = model
        except Exception as exc:  # noqa: BLE001 - an odd frame (shape, dtype, cv2.error) must not stop the line
            self.stats.incr("errors")
            job.error = f"preprocess failed: {exc}"
            log.warning("frame %d: %s", job.frame.seq, job.error)
        job.latency_ms["preprocess"] = (time.monotonic() - t0) * 1000.0

    # ---- inference ---------------------------------------------------------------------------

    def _infer_loop(self) -> None:
        while True:
            self._swap_if_pending()
            self._ping_watchdog()
            try:
                job = self._q_infer.get(timeout=min(_IDLE_TICK_S * 5, self._watchdog_every_s))
            except queue.Empty:
                continue
            if job is END:
                self._swap_if_pending()
                self._q_pub.put(END)
                return
            if self._abandon.is_set():
                job.error = job.error or _ABANDONED
            if job.error is None:
                model = self._model
                if job.model is not model:  # preprocessed for a model swapped out meanwhile
                    self._prepare(job, model)
            if job.error is None and not self._infer(job, model):
                continue  # timed out: the decide thread has already published "unknown"
            self._q_pub.put(job)

    def _infer(self, job: Job, model: LoadedModel) -> bool:
        """Run the backend on one job; False when the call overran the timeout (result discarded)."""
        self._guard.begin(job)
        t0 = time.monotonic()
        try:
            outputs, error = model.backend.infer({model.manifest.input.name: job.x}), None
        except Exception as exc:  # noqa: BLE001 - a backend (ORT, TensorRT, plugin) may raise anything; the line goes on
            outputs, error = None, f"inference failed: {type(exc).__name__}: {exc}"
        elapsed_ms = (time.monotonic() - t0) * 1000.0
        if not self._guard.finish():
            self.stats.incr("late_results")
            log.warning("frame %d: inference finished after %.0f ms, past the timeout; result discarded",
                        job.frame.seq, elapsed_ms)
            return False
        job.latency_ms["infer"] = elapsed_ms
        job.outputs, job.error = outputs, error
        if error is not None:
            self.stats.incr("errors")
            log.warning("frame %d: %s", job.frame.seq, error)
        return True

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 while inference makes progress and capture is not stalled.

        Called from the inference loop, so a hung backend call stops the pings. A capture thread
        stuck longer than a read timeout plus the longest reconnect backoff (plus slack for a slow
        open) also stops them; then systemd restarts the service.
        """
        now = time.monotonic()
        if now - self._last_watchdog < self._watchdog_every_s:
            return
        cam = self.settings.camera
        if now - self._capture_alive > cam.read_timeout_s + cam.reconnect_max_s + cam.open_timeout_s + 30.0:
            return
        self._last_watchdog = now
        self._notify(self.notifier.watchdog)

    # ---- decide + hand to the publisher ------------------------------------------------------

    def _decide_loop(self) -> None:
        p = self.settings.pipeline
        report = PeriodicReporter(p.stats_interval_s, self._report_stats)
        drops = PeriodicReporter(_DROP_CHECK_S, self._check_drops)
        try:
            while True:
                try:
                    job = self._q_pub.get(timeout=_IDLE_TICK_S)
                except queue.Empty:
                    job = None
                if job is END:
                    break
                if job is not None:
                    self._finish(job)
                if self._abandon.is_set():
                    self._answer_abandoned()
                    break
                expired = self._guard.expire(p.infer_timeout_s)
                if expired is not None:
                    self._finish_timed_out(expired)
                report.tick()
                drops.tick()
        finally:
            self._t_finished = time.monotonic()
            if self._state != "failed":
                self._state = "stopped"
            self._report_stats()
            self._close_all()  # the publisher last: its final heartbeat asks heartbeat_status() for these counts
            self._done.set()

    def _answer_abandoned(self) -> None:
        """After a drain timeout: every frame still in the pipeline gets an "unknown" verdict.

        The inference thread is (presumably) stuck in a backend call: claim its frame, then take what
        waits in front of it; the preprocess thread keeps forwarding until the end marker arrives.
        """
        deadline = time.monotonic() + _ABANDON_S
        end_seen = False
        while time.monotonic() < deadline:
            stuck = self._guard.expire(0.0)
            if stuck is not None:
                stuck.error = _ABANDONED
                self._finish(stuck)
            try:
                job = self._q_pub.get_nowait()
            except queue.Empty:
                job = None
            if job is END:
                return
            if job is not None:
                self._finish(job)
                continue
            if not end_seen:
                try:
                    job = self._q_infer.get(timeout=_IDLE_TICK_S)
                except queue.Empty:
                    continue
                if job is END:
                    end_seen = True
                else:
                    job.error = _ABANDONED
                    self._finish(job)
            elif self._unanswered() == 0:
                return  # capture has ended and every frame it took is answered
            else:
                time.sleep(_IDLE_TICK_S)
        log.error("%d frame(s) left without a verdict", self._unanswered())

    def _unanswered(self) -> int:
        """Frames taken but not yet answered: neither published, nor refused by the publisher, nor dropped."""
        c = self.stats.snapshot()["counters"]
        return c["frames_in"] - c["verdicts_out"] - c["publish_errors"] - c["dropped_queue"]

    def _finish(self, job: Job) -> None:
        model = job.model or self._model
        thresholds = model.thresholds  # read once: the verdict and the drift watch see the same pair
        t0 = time.monotonic()
        if job.error is not None:
            verdict = unknown_verdict(job.frame, job.error, thresholds, model.manifest)
        else:
            p = self.settings.pipeline
            try:
                # into the frame's geometry once: the verdict and the observers use the same restored outputs
                if model.manifest.score_output in job.outputs:
                    job.outputs = restore_outputs(job.outputs, job.frame.image.shape[:2], model.manifest)
                verdict = decide_restored(job.outputs, job.frame, thresholds, model.manifest,
                                          min_region_area_px=p.min_region_area_px, want_heatmap=p.heatmap,
                                          max_regions=p.max_regions)
            except Exception as exc:  # noqa: BLE001 - a decision bug on odd outputs: an "unknown" verdict, not a dead line
                self.stats.incr("errors")
                log.warning("frame %d: decision failed: %s", job.frame.seq, exc)
                verdict = unknown_verdict(job.frame, f"decision failed: {exc}", thresholds, model.manifest)
        now = time.monotonic()
        job.latency_ms["decide"] = (now - t0) * 1000.0
        job.latency_ms["total"] = (now - job.frame.t_capture) * 1000.0
        verdict.latency_ms = {k: round(v, 3) for k, v in job.latency_ms.items()}
        self._publish(verdict, model, thresholds, job)

    def _finish_timed_out(self, job: Job) -> None:
        timeout = self.settings.pipeline.infer_timeout_s
        self.stats.incr("timeouts")
        log.error("frame %d: inference exceeded %.3g s; verdict unknown", job.frame.seq, timeout)
        model = job.model or self._model
        thresholds = model.thresholds
        job.latency_ms["infer"] = timeout * 1000.0
        job.latency_ms["total"] = (time.monotonic() - job.frame.t_capture) * 1000.0
        verdict = unknown_verdict(job.frame, f"inference timed out after {timeout:g} s", thresholds,
                                  model.manifest, {k: round(v, 3) for k, v in job.latency_ms.items()})
        self._publish(verdict, model, thresholds, job)

    def _publish(self, verdict: Verdict, model: LoadedModel, thresholds: Thresholds, job: Job | None = None) -> None:
        """Hand ``verdict`` to the publisher, then count it as what was published.

        Counted only after the publisher accepted it, with the label the publisher reports it sent (the
        wire format may turn a verdict it cannot encode into "unknown"): the counters, the heartbeat and
        the drift watch follow what the PLC received. A publisher that raises makes a publish_error.
        """
        self.stats.record_many(verdict.latency_ms)
        t0 = time.monotonic()
        try:
            sent = self.publisher.publish(verdict)
        except Exception as exc:  # noqa: BLE001 - any sink (ZeroMQ, a plugin, a test double) may raise: a publish_error
            self.stats.incr("publish_errors")
            self._log_publish_error(verdict, exc)
            return
        finally:
            self.stats.record("publish", (time.monotonic() - t0) * 1000.0)
        label = getattr(sent, "result_state", None)  # VerdictMsg; a sink may return None ("as given")
        if label not in ("ok", "ng", "unknown"):
            label = verdict.label
        self.stats.mark_verdict(label)
        self._drift.observe(label, verdict.score, thresholds.image, model.manifest.calibration, thresholds)
        if self.observers and job is not None:
            self._offer_to_observers(job, verdict, label, model, thresholds)

    def _offer_to_observers(self, job: Job, verdict: Verdict, label: str, model: LoadedModel,
                            thresholds: Thresholds) -> None:
        """The published part to each observer (pipeline.observers): references only, O(1) each."""
        # job.outputs were brought into the frame's geometry in _finish, so overlays sit on the part
        amap = job.outputs.get(model.manifest.map_output) if job.outputs and label != "unknown" else None
        result = PartResult(job.frame.camera_id, job.frame, verdict, label,
                            amap[0, 0] if amap is not None and amap.ndim == 4 else None,
                            thresholds, model.manifest.calibration, self.status)
        for observer in self.observers:
            try:
                observer.offer(result)
            except Exception:  # an observer must never cost a part
                log.warning("observer %s refused part %d", getattr(observer, "name", observer), verdict.seq,
                            exc_info=True)

    def _log_publish_error(self, verdict: Verdict, exc: Exception) -> None:
        """Log a refused verdict: every one of the first few (the first with its traceback), then every 100th."""
        n = self.stats.get("publish_errors")
        if n <= _LOG_EVERY_PUBLISH_ERROR or n % 100 == 0:
            log.error("the verdict of frame %d (%s) was NOT published (%d so far): %s: %s", verdict.seq,
                      verdict.label, n, type(exc).__name__, exc, exc_info=n == 1)

    def _check_drops(self) -> None:
        c = self.stats.snapshot()["counters"]
        line = self._drops.observe(c["frames_in"], c["dropped_queue"] + c["dropped_gap"])
        if line is not None:
            self._notify(self.notifier.status, f"{self._state}: WARNING {line}")

    def _report_stats(self) -> None:
        log.info("stats: %s", self.stats.log_line())
        snap = self.stats.snapshot()
        c = snap["counters"]
        unsent = f", {c['publish_errors']} NOT PUBLISHED" if c["publish_errors"] else ""
        self._notify(self.notifier.status,
                     f"{self._state}: {snap['fps']:.1f} fps, {c['verdicts_out']} judged "
                     f"({c['ng']} ng, {c['unknown']} unknown), {c['dropped_queue'] + c['dropped_gap']} dropped"
                     f"{unsent}, drift {self._drift.state}")

    def _close_all(self) -> None:
        pending = self._pending_model
        self._pending_model = None
        for what, obj in (("backend", self._model.backend if self._model else self._initial_backend),
                          ("queued backend", pending.backend if pending else None),
                          ("publisher", self.publisher)):
            if obj is None:
                continue
            try:
                obj.close()
            except Exception:
                log.warning("closing the %s failed", what, exc_info=True)

    # ---- runtime control (any thread) ----------------------------------------------------------

    def status(self) -> dict:
        """fps, per-stage latency (median/p99 ms), counters, model, thresholds, mode, camera, uptime, drift.

        ``errors`` counts frames that could not be judged plus verdicts the publisher refused
        (``publish_errors``, also given on its own); ``drift`` is the drift watch's block (health.drift);
        ``camera`` the source wrapper's state, last error and figures.
        """
        snap = self.stats.snapshot()
        model = self._model
        c = snap["counters"]
        src = self.source
        out = {
            "state": self._state,
            "mode": self.mode,
            "camera": {"id": src.camera_id, "state": _CAMERA_STATES.get(src.state, src.state),
                       "error": src.last_error, "source": src.status()},
            "fps": snap["fps"],
            "mean_fps": snap["mean_fps"],
            # heartbeat summary figures (protocol.messages checks these keys' types)
            "drops": c["dropped_queue"] + c["dropped_gap"],
            "errors": c["errors"] + c["publish_errors"],
            "publish_errors": c["publish_errors"],
            "latency_ms": snap["latency_ms"],
            "counters": snap["counters"],
            "queues": {"preprocess": self._q_pre.qsize(), "inference": self._q_infer.qsize(),
                       "publish": self._q_pub.qsize()},
            "inference_busy_s": round(self._guard.busy_for(), 3),
            "heatmap": self.settings.pipeline.heatmap,
            "uptime_s": round(time.monotonic() - self._t_started, 3) if self._t_started else 0.0,
            "drift": self._drift.snapshot(),
        }
        if self.observers:
            out["observers"] = {o.name: o.stats() for o in self.observers}
        if model is not None:
            out.update(model.describe())
        return out

    def heartbeat_status(self) -> dict:
        """status() made sendable (every NaN or infinity → null, said once per set of fields): the publisher's
        status provider, asked on the publisher's heartbeat clock."""
        status, replaced = _json_safe(self.status())
        if replaced and replaced != self._non_finite_logged:  # a stuck heartbeat is worse than a null field
            log.warning("status had %d non-finite number(s); sent as null: %s", len(replaced), ", ".join(replaced[:5]))
        self._non_finite_logged = replaced  # said once per set of fields, not once a second
        return status

    def set_threshold(self, image: float | None = None, pixel: float | None = None) -> dict:
        """Change the thresholds in force from the next decision on; returns them (score / map units).

        Checked by Thresholds.check against the model's lower bounds: ConfigError (nothing changes) for a
        value that is not finite or lies below the bound. A model queued by ``reload`` gets the same
        values (checked against its own bounds), so a change made while a swap is pending is not lost.
        The drift watch starts a new window.
        """
        what = {"image_what": "set_threshold image", "pixel_what": "set_threshold pixel"}
        with self._model_lock:
            model, pending = self._model, self._pending_model
            if model is None:
                raise ModelError("no model loaded yet")
            new = model.thresholds.with_overrides(image, pixel, source="runtime", **what)
            new_pending = pending.thresholds.with_overrides(image, pixel, "runtime", **what) if pending else None
            model.thresholds = new  # both checked before either changes
            if pending is not None:
                pending.thresholds = new_pending
        self._drift.reset(new_pending or new)  # a queued model takes over with its own thresholds
        log.info("thresholds set at run time: image %.4g, pixel %.4g", new.image, new.pixel)
        return {"image": new.image, "pixel": new.pixel, "source": new.source}

    @property
    def thresholds(self) -> Thresholds:
        return self._model.thresholds

    def trigger(self, part_id: str | None = None) -> None:
        """Software trigger forwarded to the source (CameraError when it has no trigger or is not connected)."""
        self.source.trigger(part_id)

    def reload(self, model_dir: str | Path, timeout: float | None = None) -> dict:
        """Load ``model_dir`` (manifest, thresholds, backend, warm-up) and swap it in between two frames.

        One reload at a time: a second one while a model loads is refused (ModelError "in progress").
        The load runs in the caller's thread without any lock that status(), set_threshold() or the stage
        threads need, so they go on meanwhile.
        A refused reload changes nothing: on any failure (ModelError; ConfigError when a configured threshold
        override does not fit the new model; DependencyError when the backend needs a missing library) the
        running model stays, and the error is raised before anything is swapped. The reply is built and
        checked (JSON-encodable) before the swap, so nothing can fail after it. Thresholds become the new
        manifest's plus the configured overrides (run-time set_threshold values belong to the old model and
        are dropped). Returns the new model's description with ``in_force``: True once it judges the next
        frame, False when queued behind an inference that runs longer than ``timeout`` (it takes over after it).
        The swapped-out model's memory is given back to the OS (health.memory).
        """
        if not self._reload_lock.acquire(blocking=False):
            raise ModelError(f"cannot reload {model_dir}: another reload is in progress")
        try:
            return self._reload(model_dir, timeout)
        finally:
            self._reload_lock.release()
            release_free_memory()  # what the old (or the refused) model held, not kept by the allocator

    def _reload(self, model_dir: str | Path, timeout: float | None) -> dict:
        if self._model is None or self._done.is_set():
            raise ModelError(f"cannot reload {model_dir}: the pipeline is not running")
        m = self.settings.model
        generation = self._model.generation + 1
        new = load_model(model_dir, self._backend_factory, m.image_threshold, m.pixel_threshold,
                         generation=generation, warmup_runs=self.settings.pipeline.warmup_runs)
        try:
            reply = new.describe()
            json.dumps(reply, allow_nan=False)  # the control reply must be sendable before we commit
        except (TypeError, ValueError) as exc:
            self._close_backend(new)
            raise ModelError(f"{model_dir}: the new model cannot be described: {exc}") from None
        if self._inference_running():
            self._swapped.clear()
            with self._model_lock:
                superseded, self._pending_model = self._pending_model, new
            self._close_backend(superseded)  # an earlier reload still queued: this one replaces it
            if not self._inference_running():  # it ended meanwhile: nobody else will swap
                self._swap_if_pending()
            wait_s = timeout if timeout is not None else self.settings.pipeline.infer_timeout_s + 1.0
            in_force = self._swapped.wait(wait_s)
            if not in_force:
                log.warning("model %s queued; it takes over after the inference in progress",
                            new.manifest.model_id)
        else:
            with self._model_lock:
                old, self._model = self._model, new
            self._close_backend(old)
            in_force = True
        self._drift.reset(new.thresholds)
        self.stats.incr("reloads")
        reply["in_force"] = in_force
        return reply

    def _inference_running(self) -> bool:
        return any(t.name.endswith("inference") and t.is_alive() for t in self._threads)

    def _swap_if_pending(self) -> None:
        """Put a queued model in force (inference thread between frames; reload when that thread has ended)."""
        if self._pending_model is None:
            return
        with self._model_lock:
            if self._pending_model is None:  # another thread swapped it in meanwhile
                return
            old, self._model, self._pending_model = self._model, self._pending_model, None
        log.info("model swapped: %s → %s (%s)", old.manifest.model_id if old else None,
                 self._model.manifest.model_id, self._model.model_dir)
        self._swapped.set()
        self._close_backend(old)
        if not self._reload_lock.locked():  # swapped after reload() returned: it cannot trim for us
            release_free_memory()

    @staticmethod
    def _close_backend(model: LoadedModel | None) -> None:
        if model is None:
            return
        try:
            model.backend.close()
        except Exception:
            log.warning("closing the old backend failed", exc_info=True)

    # ---- results -------------------------------------------------------------------------------

    def summary(self) -> dict:
        """End-of-run figures: counters (publish_errors: verdicts NOT published), fps, per-stage latency,
        duration, frames still in flight, the drift watch, the camera's own figures, model and mode."""
        snap = self.stats.snapshot()
        end = self._t_finished or time.monotonic()
        duration = end - self._t_started if self._t_started else 0.0
        out = {
            "state": self._state,
            "mode": self.mode,
            "duration_s": round(duration, 6),
            "fps": snap["mean_fps"],
            "counters": snap["counters"],
            "latency_ms": snap["latency_ms"],
            "in_flight": self._unanswered(),
            "drift": self._drift.snapshot(),
            "camera": self.source.status(),
            "drop_warnings": self._drops.warnings,
        }
        if self._model is not None:
            out.update(self._model.describe())
        return out


def _json_safe(obj, path: str = "status") -> tuple:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN), and the paths replaced."""
    replaced: list[str] = []

    def walk(x, where):
        if isinstance(x, float) and not math.isfinite(x):
            replaced.append(where)
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(obj, path), replaced

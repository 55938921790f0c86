"""``edge-inspect run``: the line. Camera → model → verdicts over ZeroMQ, until stopped.

Start-up order, so that nothing is judged or published by a station that cannot run:
  1. settings and thresholds (manifest, ``[model]`` overrides, environment, ``--threshold``), checked against
     the model: an unusable one is one line and exit 2, and nothing is opened;
  2. every socket is bound: the live view's port (``--view``; off loopback only with a token), the verdict PUB
     socket (``--bind``) and the control channel (``--control``); a taken port is one line and exit 2, before
     the model loads or the camera opens; the archive (``--archive``) is opened and ``--show`` checked too;
  3. the model is loaded and warmed up, then the camera is opened: a camera never seen in this run is not
     retried for ever (one line, exit 1; ``camera.wait_at_start_s`` waits for it); once seen, it is
     reconnected whenever it is lost;
  4. frames flow.

SIGINT / SIGTERM stop capture, finish the frames already taken, publish their verdicts, close the
sockets and exit 0 with a summary (parts judged, ok / ng / unknown, drops, latency per stage). The same
signal repeated within ``_SIGNAL_ECHO_S`` is the same request (``timeout`` and a terminal signal the whole
process group, so the process may get it twice at once): the drain goes on. A repeat after that cuts the
drain short: frames not judged yet are published as "unknown"; the summary still comes.
The exit code is 1 when any verdict could not be published (``publish_errors``): those parts were not
judged as far as the PLC knows, whatever the station decided.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time

from ..errors import ConfigError, EdgeInspectError
from ..settings import load_settings

log = logging.getLogger(__name__)

STAGE_ORDER = ("capture_wait", "preprocess", "infer", "decide", "publish", "total")
_SIGNAL_ECHO_S = 2.0  # a stop signal repeated within this is the same request (timeout(1), process groups)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="inspect frames from a camera and publish verdicts over ZeroMQ",
        description="Run the inspection line: camera → model → OK/NG verdicts published over ZeroMQ. "
        "Flags override the config file (--config), which overrides EDGE_INSPECT_* environment values.",
    )
    p.add_argument("--camera", metavar="[ID=]URI", action="append",
                   help="frame source, e.g. synthetic://, dir://PATH, rtsp://..., gige://IP; give it again for more "
                   "cameras in one station (one model in memory, batched), optionally named: --camera top=gige://IP")
    p.add_argument("--model", metavar="MODEL_DIR", help="exported model folder (manifest.json + graphs)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], help="inference backend")
    p.add_argument("--mode", choices=["auto", "free-run", "lossless"],
                   help="free-run: latest frame wins, drops counted; lossless: every frame, camera back-pressured; "
                   "auto (default): lossless for file:// and dir://, free-run for cameras")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="image-score threshold (default: the manifest's); finite, not below the model's lower bound")
    p.add_argument("--bind", metavar="ENDPOINT", help="verdict PUB socket, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames taken from the camera")
    p.add_argument("--heatmap", action="store_true", default=None,
                   help="publish the anomaly heat-map with each verdict")
    p.add_argument("--camera-id", metavar="ID", help="camera id carried in every verdict")
    p.add_argument("--view", metavar="ADDR:PORT",
                   help="serve the live view (web page) here, e.g. 127.0.0.1:8080; another address needs [view] token")
    p.add_argument("--archive", metavar="DIR", help="keep NG parts (and [archive] ok_sample of OK parts) in DIR")
    p.add_argument("--show", action="store_true", help="show the parts in a local window (needs OpenCV with GUI)")
    control = p.add_mutually_exclusive_group()
    control.add_argument("--control", metavar="ENDPOINT",
                         help="control channel (ROUTER) socket, e.g. tcp://127.0.0.1:5556 (default: control.bind)")
    control.add_argument("--no-control", action="store_true", help="do not open the ZeroMQ control channel")
    p.set_defaults(func=run)


def settings_from_args(args):
    """Settings from --config, the environment and the flags (flags win; absent flags change nothing)."""
    overrides = {
        **camera_overrides(args),
        "model": {"dir": args.model, "backend": args.backend, "image_threshold": args.threshold},
        "pipeline": {"mode": args.mode, "max_frames": args.max_frames, "heatmap": args.heatmap},
        "publisher": {"bind": args.bind},
        "control": {"enabled": False if args.no_control else None, "bind": args.control},
        "view": {"enabled": True if getattr(args, "view", None) else None, "bind": getattr(args, "view", None)},
        "archive": {"enabled": True if getattr(args, "archive", None) else None, "dir": getattr(args, "archive", None)},
    }
    settings = load_settings(args.config, overrides)
    if settings.model.dir is None:
        raise ConfigError("no model folder: pass --model MODEL_DIR or set [model] dir in the config")
    return settings


def camera_overrides(args) -> dict:
    """The camera part of the flags: one ``--camera`` sets ``[camera] uri`` (a one-camera run, as ever, and
    any ``[[cameras]]`` of the config is set aside); several make the station's ``cameras`` list, each
    ``ID=URI`` or ``URI`` (id derived from the URI), in ``--mode`` or the configured mode."""
    uris = args.camera or []
    if len(uris) <= 1:
        out = {"camera": {"uri": uris[0] if uris else None, "camera_id": args.camera_id}}
        if uris:
            out["cameras"] = []
        return out
    if args.camera_id is not None:
        raise ConfigError("--camera-id names the one camera; with several --camera give each as ID=URI")
    cameras = []
    for text in uris:
        head, sep, rest = text.partition("=")
        if sep and "://" not in head and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", head):
            cameras.append({"id": head, "uri": rest})
        else:
            cameras.append({"uri": text})
    return {"cameras": cameras}


def _collaborators():
    """The real camera, publisher, control server and systemd notifier (imported late: optional parts)."""
    try:
        from ..camera.uri import open_source
        from ..health.sdnotify import SystemdNotifier
        from ..protocol.control import ControlServer
        from ..protocol.publisher import VerdictPublisher
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("edge_inspect."):
            raise EdgeInspectError(f"this edge-inspect build lacks {exc.name}; 'run' cannot start") from exc
        raise
    return open_source, VerdictPublisher, ControlServer, SystemdNotifier


def check_thresholds(settings, manifest, args):
    """The thresholds the run would start with (decision.Thresholds), checked before anything opens.

    ConfigError names where a bad override came from: ``--threshold`` or the ``model.*_threshold`` setting
    (config file or EDGE_INSPECT_MODEL__*_THRESHOLD); a bad manifest was already refused at load.
    """
    from ..decision import Thresholds

    image_what = "--threshold" if getattr(args, "threshold", None) is not None else (
        "model.image_threshold (config file or EDGE_INSPECT_MODEL__IMAGE_THRESHOLD)")
    return Thresholds.from_manifest(
        manifest, settings.model.image_threshold, settings.model.pixel_threshold, source="config",
        image_what=image_what, pixel_what="model.pixel_threshold (config file or EDGE_INSPECT_MODEL__PIXEL_THRESHOLD)")


def run(args) -> int:
    from ..backends.select import open_backend
    from ..manifest import load_manifest
    from ..pipeline.runner import Pipeline

    settings = settings_from_args(args)
    if not args.verbose:  # the service logs at the configured level; -v/-vv still win
        logging.getLogger().setLevel(settings.log_level)
    if settings.cameras:
        return run_station(settings, args)
    open_source, VerdictPublisher, ControlServer, SystemdNotifier = _collaborators()

    manifest = load_manifest(settings.model.dir)
    check_thresholds(settings, manifest, args)  # before the backend, camera or sockets are opened
    from ._outputs import LineOutputs

    outputs = LineOutputs(settings, show=getattr(args, "show", False))  # view port bound, archive opened
    try:
        backend = open_backend(settings.model.dir, settings.model.backend, manifest=manifest,
                               threads=settings.model.intra_op_threads)
    except BaseException:
        outputs.close()
        raise
    try:
        source = open_source(settings.camera)  # parses the URI; opens nothing yet
        publisher = VerdictPublisher(settings.publisher, settings.security, camera_id=settings.camera.camera_id)
    except BaseException:
        _close_quietly(backend, "backend")
        outputs.close()
        raise
    notifier = SystemdNotifier()
    pipeline = Pipeline(source, backend, publisher, settings, notifier=notifier, observers=outputs.observers)
    return _serve(pipeline, settings, ControlServer, publisher, notifier, outputs)


def run_station(settings, args) -> int:
    """``run`` with several cameras (pipeline.station), in the same start-up order as one camera: every
    camera's thresholds checked, sockets bound (the live view's too) and the archive opened, then each
    camera's model (shared) and camera opened. The view, archive and window see every camera's parts."""
    from ..manifest import load_manifest
    from ..pipeline.station import build_station, first_camera_id
    from ..pipeline.station_settings import camera_entries, camera_settings

    open_source, VerdictPublisher, ControlServer, SystemdNotifier = _collaborators()
    for cid, entry in camera_entries(settings.cameras):
        s = camera_settings(settings, cid, entry)
        if s.model.dir is None:
            raise ConfigError(f"camera {cid}: no model folder; set model_dir in its [[cameras]] table or --model")
        try:
            check_thresholds(s, load_manifest(s.model.dir), args)
        except ConfigError as exc:
            raise ConfigError(f"camera {cid}: {exc}") from None
    from ._outputs import LineOutputs

    outputs = LineOutputs(settings, show=getattr(args, "show", False))  # view port bound, archive opened
    try:
        publisher = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    except BaseException:
        outputs.close()
        raise
    notifier = SystemdNotifier()
    try:
        station = build_station(settings, publisher, notifier, open_source=open_source, observers=outputs.observers)
    except BaseException:
        _close_quietly(publisher, "publisher")
        _close_quietly(notifier, "systemd notifier")
        outputs.close()
        raise
    return _serve(station, settings, ControlServer, publisher, notifier, outputs, format_station_summary)


def _serve(target, settings, ControlServer, publisher, notifier, outputs, formatter=None) -> int:
    """Run ``target`` (a Pipeline, or a Station of several cameras) until it ends and print its summary: the
    control channel bound first (before the model loads and the camera opens: a taken port judges and
    publishes nothing), the view/archive/window started, and closed after the drain."""
    control = None
    if settings.control.enabled:
        try:
            control = ControlServer(settings.control, settings.security, target=target, publisher=publisher)
            control.start()
        except BaseException:
            target.stop()  # never started: closes the backend(s) and the publisher
            _close_quietly(notifier, "systemd notifier")
            outputs.close()
            raise
    # Installed until the summary is printed: a late repeat of the stop signal (timeout(1) sends two) must
    # meet this handler, not the default one that would kill the process before the summary.
    previous = _install_signal_handlers(StopSignals(target))
    try:
        outputs.start(target.status)  # a station's status has one entry per camera (the view makes a tile of each)
        return _run_and_report(target, control, notifier, formatter)
    finally:
        outputs.close()  # after the drain: the archive writes what is still queued
        _restore_signal_handlers(previous)


def format_station_summary(summary: dict) -> str:
    """Each camera's summary (format_summary) under its id, then the shared models' batching."""
    parts = []
    for cid, s in summary["cameras"].items():
        body = "\n".join("  " + line for line in format_summary(s).splitlines())
        parts.append(f"camera {cid}:\n{body}")
    for m in summary.get("hub", []):
        parts.append(f"model {m['model_dir']}: {m['images']} frames (warm-ups included) in {m['batches']} "
                     f"inference calls (mean batch {m['mean_batch']:.2f}) for cameras {', '.join(m['used_by'])}")
    return "\n".join(parts)


def _run_and_report(pipeline, control, notifier, formatter=None) -> int:
    """Start the pipeline (or station), wait until it ends, print the summary; the exit code."""
    try:
        pipeline.start()  # model, then camera; raises (everything closed) when either cannot work
        while not pipeline.wait(0.2):
            pass
    finally:
        if control is not None:
            _close_quietly(control, "control server")
        drained = pipeline.stop(wait=True)
        _close_quietly(notifier, "systemd notifier")
    summary = pipeline.summary()
    _print_result((formatter or format_summary)(summary))
    if isinstance(pipeline.fatal_error, EdgeInspectError):  # e.g. the camera needs a missing library
        raise pipeline.fatal_error
    if pipeline.fatal_error is not None:
        _print_result(f"edge-inspect run: pipeline failed: {pipeline.fatal_error!r}")
        return 1
    if not drained:
        _print_result(f"edge-inspect run: {summary['in_flight']} frames were still in flight at exit")
        return 1
    unpublished = summary["counters"].get("publish_errors", 0)
    if unpublished:
        _print_result(f"edge-inspect run: {unpublished} verdict(s) could NOT be published; see the log")
        return 1
    return 0


def _print_result(text: str) -> None:
    """Print to stdout; a full or closed stdout is logged, not raised: the verdicts are already published,
    so the exit code must say how the run went, not whether its summary could be shown."""
    try:
        print(text, flush=True)
    except OSError as exc:
        from . import discard_broken_stdout

        discard_broken_stdout(broken=True)
        log.error("cannot print the run summary to stdout: %s", exc.strerror or exc)


class StopSignals:
    """The SIGINT / SIGTERM handler of ``run``: the first stops the pipeline (it drains: every frame taken
    gets its verdict). The same request again within ``echo_s`` seconds (``timeout`` signals the child and
    then its process group) changes nothing; a later one cuts the drain short (``Pipeline.abandon``).
    Never raises: the drain and the summary must not be lost to a second signal."""

    def __init__(self, pipeline, echo_s: float = _SIGNAL_ECHO_S, clock=time.monotonic):
        self.pipeline, self.echo_s, self._clock = pipeline, echo_s, clock
        self.first: float | None = None
        self.seen: list[str] = []

    def __call__(self, signum, _frame=None) -> None:
        name = signal.Signals(signum).name
        self.seen.append(name)
        now = self._clock()
        if self.first is None:
            self.first = now
            log.warning("%s received: stopping", name)
            self.pipeline.stop(wait=False)
        elif now - self.first < self.echo_s:
            log.info("%s received again: already stopping; the frames taken are still being judged", name)
        else:
            log.warning("%s received again: cutting the drain short", name)
            self.pipeline.abandon()


def _install_signal_handlers(handler) -> dict:
    if threading.current_thread() is not threading.main_thread():  # e.g. called from a test thread
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _close_quietly(obj, what: str) -> None:
    try:
        obj.close()
    except Exception:
        log.warning("closing the %s failed", what, exc_info=True)


def format_summary(summary: dict) -> str:
    """Human summary of a run: parts judged (verdicts published), ok / ng / unknown, verdicts NOT published,
    drops, errors, the drift watch, latency per stage."""
    c = summary["counters"]
    lines = [
        f"model {summary.get('model_id', '?')} on {summary.get('backend', '?')}, mode {summary['mode']}, "
        f"threshold {summary.get('threshold', {}).get('image', float('nan')):.4g}",
        f"parts judged: {c['verdicts_out']}  (ok {c['ok']}, ng {c['ng']}, unknown {c['unknown']})",
    ]
    if c.get("publish_errors"):
        lines.append(f"NOT PUBLISHED: {c['publish_errors']} verdict(s) the publisher refused (publish errors)")
    lines += [
        f"frames taken: {c['frames_in']}; dropped: {c['dropped_queue']} (queue, free-run), "
        f"{c['dropped_gap']} (camera sequence gaps); errors {c['errors']}, "
        f"publish errors {c.get('publish_errors', 0)}, "
        f"timeouts {c['timeouts']}, camera errors {c['camera_errors']}",
        f"throughput: {summary['fps']:.1f} frames/s over {summary['duration_s']:.1f} s",
    ]
    drift = summary.get("drift")
    if drift and drift.get("state") in ("ok", "drift"):
        lines.append(f"drift watch: {drift['state']}, estimated false-reject rate "
                     f"{_percent(drift.get('estimated_frr'))} (alert above {_percent(drift.get('alert_frr'))}) "
                     f"over {drift['n']} OK parts")
    elif drift:
        lines.append(f"drift watch: {drift.get('state')} ({drift.get('n', 0)} OK parts)")
    lines.append("latency per stage (ms):   median      p99")
    lat = summary["latency_ms"]
    for stage in [s for s in STAGE_ORDER if s in lat] + sorted(set(lat) - set(STAGE_ORDER)):
        lines.append(f"  {stage:<20}{lat[stage]['median']:>10.2f}{lat[stage]['p99']:>9.2f}")
    return "\n".join(lines)


def _percent(x) -> str:
    """A fraction as a percentage for the summary; '?' when unknown."""
    return "?" if x is None else f"{100 * x:.2f} %"

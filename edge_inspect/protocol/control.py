"""Control channel: a ROUTER socket in its own thread answering JSON requests, and a small client.

Requests and replies are ``ControlRequest`` / ``ControlReply`` (protocol.messages). REQ and DEALER clients
both work: every frame before the last is the routing envelope and is echoed back unchanged.
A request that fails validation, names an unknown command, or makes the target raise gets
``{"ok": false, "error": ...}`` and changes nothing; nothing a client sends ends the server thread.

The target (the pipeline) is called from the control thread, so its methods must be thread-safe:
    status() -> dict; trigger(part_id: str); set_threshold(image: float | None, pixel: float | None);
    reload(model_dir: str). They raise EdgeInspectError subclasses for refusals (the message is replied).
A request naming a ``camera`` passes it on as ``camera=`` to a target that has several (a station,
pipeline.station); a one-camera target accepts only its own id.

``reload`` loads and warms up a model, which takes seconds: it runs on a worker thread, and the control
thread keeps answering everything else (status, ping, last, ...) meanwhile; the reload's reply is sent
when it is done. A second ``reload`` while one is loading is refused at once ("already in progress").

Refusals are logged at INFO, cut to one short line and rate-limited (a client sending garbage in a loop
must not fill the disk): at most ``_LOG_BURST`` lines per ``_LOG_WINDOW_S``, then one line saying how many
were left out.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from typing import Any

import zmq

from ..errors import EdgeInspectError, ProtocolError
from .messages import (
    CONTROL_COMMANDS,
    MAX_CONTROL_BYTES,
    ControlReply,
    ControlRequest,
    decode_json_object,
    format_time,
    request_id,
)
from .publisher import VerdictPublisher, bind_socket
from .security import ClientKeys, secure_client, server_for
from .settings import ControlSettings, SecuritySettings

log = logging.getLogger(__name__)

_SLOW_COMMANDS = frozenset({"reload"})  # run on the worker thread; the control thread keeps answering
_LOG_BURST = 5  # refusal lines logged per window ...
_LOG_WINDOW_S = 10.0  # ... after which one line counts the ones left out
_LOG_TEXT = 200  # characters of a client-provided message kept in a log line


def cut(text: str, limit: int = _LOG_TEXT) -> str:
    """``text`` on one line, at most ``limit`` characters (the rest counted, not shown)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else f"{flat[:limit]}… (+{len(flat) - limit} chars)"


class RateLimitedLog:
    """Log at most ``burst`` lines per ``window_s`` seconds; then say once how many were left out."""

    def __init__(self, logger: logging.Logger, burst: int = _LOG_BURST, window_s: float = _LOG_WINDOW_S,
                 clock=time.monotonic):
        self._log, self._burst, self._window, self._clock = logger, burst, window_s, clock
        self._lock = threading.Lock()
        self._t0 = -float("inf")
        self._n = 0
        self._suppressed = 0

    def log(self, level: int, msg: str, *args, exc_info: bool = False) -> bool:
        """Log (True) or count as left out (False)."""
        with self._lock:
            now = self._clock()
            if now - self._t0 >= self._window:
                if self._suppressed:
                    self._log.log(level, "control: %d more such line(s) in the last %.0f s not logged",
                                  self._suppressed, now - self._t0)
                self._t0, self._n, self._suppressed = now, 0, 0
            if self._n >= self._burst:
                self._suppressed += 1
                return False
            self._n += 1
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True


class ControlServer:
    """``ControlServer(settings, security, target, publisher=None).start()``; ``.endpoint`` once started."""

    def __init__(self, settings: ControlSettings, security: SecuritySettings, target: Any,
                 publisher: VerdictPublisher | None = None):
        self.settings = settings
        self.security = security
        self.target = target
        self.publisher = publisher
        self.endpoint: str | None = None
        self.requests = 0
        self.errors = 0
        self._counts_lock = threading.Lock()
        self._refusals = RateLimitedLog(log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._curve = None
        # The worker thread for slow commands: one at a time; its replies come back over an inproc socket.
        self._jobs: queue.Queue = queue.Queue(maxsize=1)
        self._worker: threading.Thread | None = None
        self._worker_busy = threading.Event()
        self._replies_addr = f"inproc://control-replies-{id(self):x}"

    def start(self) -> ControlServer:
        if self._thread is not None:
            return self
        self._ctx = zmq.Context()
        try:
            self._curve = server_for(self._ctx, self.security, self.settings.bind, "control")
            sock = self._ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 200)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES + 1024)  # oversized request: peer disconnected
            sock.setsockopt(zmq.SNDHWM, 100)
            if self._curve is not None:
                self._curve.secure(sock)
            self.endpoint = bind_socket(sock, self.settings.bind, "control.bind")
            replies = self._ctx.socket(zmq.PULL)
            replies.setsockopt(zmq.LINGER, 0)
            replies.bind(self._replies_addr)
        except BaseException:
            if self._curve is not None:
                self._curve.stop()
            self._ctx.destroy(linger=0)
            raise
        self._worker = threading.Thread(target=self._work, name="control-worker", daemon=True)
        self._worker.start()
        self._thread = threading.Thread(target=self._run, args=(sock, replies), name="control", daemon=True)
        self._thread.start()
        log.info("control channel on %s", self.endpoint)
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        worker, self._worker = self._worker, None
        if worker is not None:
            try:
                self._jobs.put(None, timeout=1.0)  # after the job in hand, if any
            except queue.Full:
                pass
            worker.join(timeout=10.0)  # a reload in progress finishes (its reply is dropped)
        if self._curve is not None:
            self._curve.stop()
        self._ctx.term()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, sock: zmq.Socket, replies: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                try:
                    ready = dict(poller.poll(100))
                except zmq.ZMQError as exc:
                    self._refusals.log(logging.WARNING, "control: poll failed: %s", exc)
                    time.sleep(0.01)
                    continue
                if replies in ready:  # a slow command's reply, made by the worker thread
                    self._send(sock, replies.recv_multipart())
                if sock not in ready:
                    continue
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                except zmq.ZMQError as exc:
                    self._refusals.log(logging.WARNING, "control: receive failed: %s", exc)
                    time.sleep(0.01)
                    continue
                if len(frames) < 2:  # ROUTER always prefixes the peer identity; anything else is noise
                    continue
                if self._is_slow(frames[-1]):
                    if self._worker_busy.is_set():
                        self._send(sock, frames[:-1] + [self._busy_reply(frames[-1])])
                        continue
                    self._worker_busy.set()
                    self._jobs.put((frames[:-1], frames[-1]))  # empty: the worker is idle
                    continue
                self._send(sock, frames[:-1] + [self.handle(frames[-1])])
        finally:
            sock.close()
            replies.close()

    def _send(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: the reply is lost, not the server
            self._refusals.log(logging.WARNING, "control: reply not sent: %s", exc)

    @staticmethod
    def _is_slow(raw: bytes) -> bool:
        try:
            obj = decode_json_object(raw, "request", MAX_CONTROL_BYTES)
        except ProtocolError:
            return False
        return obj.get("cmd") in _SLOW_COMMANDS

    def _busy_reply(self, raw: bytes) -> bytes:
        with self._counts_lock:
            self.requests += 1
            self.errors += 1
        obj = decode_json_object(raw, "request", MAX_CONTROL_BYTES)
        cmd = obj.get("cmd")
        try:
            req_id = request_id(obj)
        except ProtocolError:
            req_id = None
        error = f"{cmd}: another {cmd} is in progress; try again when it has replied"
        self._refusals.log(logging.INFO, "control: %s refused: %s", cmd, error)
        return ControlReply(ok=False, cmd=cmd, error=error, id=req_id).to_frames()[0]

    def _work(self) -> None:
        """The worker thread: slow commands one at a time; each reply goes back through the inproc socket."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            envelope, raw = job
            try:
                reply = self.handle(raw)
            finally:
                self._worker_busy.clear()
            try:
                push = self._ctx.socket(zmq.PUSH)
            except zmq.ZMQError:  # the server is closing: the reply has nobody to go to
                continue
            try:
                push.setsockopt(zmq.LINGER, 1000)
                push.connect(self._replies_addr)
                push.send_multipart(envelope + [reply])
            except zmq.ZMQError as exc:
                log.warning("control: reply to a slow request not delivered: %s", exc)
            finally:
                push.close()

    def handle(self, raw: bytes) -> bytes:
        """One request frame -> one reply frame. Never raises (the fuzz tests hold it to that)."""
        with self._counts_lock:
            self.requests += 1
        cmd, req_id = None, None
        try:
            try:  # for the error reply: echo id and cmd even when the rest of the request is refused
                obj = decode_json_object(raw, "request", MAX_CONTROL_BYTES)
                req_id = request_id(obj)
                name = obj.get("cmd")
                cmd = name if isinstance(name, str) and name in CONTROL_COMMANDS else None
            except ProtocolError:
                pass
            request = ControlRequest.from_frames([raw])
            cmd = request.cmd
            result = self._dispatch(request)
            reply = ControlReply(ok=True, cmd=cmd, result=result, id=req_id)
            return reply.to_frames()[0]
        except EdgeInspectError as exc:
            with self._counts_lock:
                self.errors += 1
            self._refusals.log(logging.INFO, "control: %s refused: %s", cmd or "request", cut(str(exc)))
            return ControlReply(ok=False, cmd=cmd, error=str(exc), id=req_id).to_frames()[0]
        except Exception as exc:  # noqa: BLE001 - a target bug must not kill the control thread: "internal error"
            with self._counts_lock:
                self.errors += 1
            self._refusals.log(logging.ERROR, "control: %s failed: %s", cmd or "request",
                               cut(f"{type(exc).__name__}: {exc}"), exc_info=True)
            error = f"internal error: {type(exc).__name__}: {exc}"
            return ControlReply(ok=False, cmd=cmd, error=error, id=req_id).to_frames()[0]

    def _need_target(self, cmd: str) -> Any:
        if self.target is None:
            raise ProtocolError(f"{cmd}: no pipeline attached to this control channel")
        return self.target

    def _camera(self, cmd: str, camera: str | None) -> dict:
        """The ``camera=`` keyword for the target's method: passed on to a station; for a one-camera target
        checked against its camera id and dropped."""
        if camera is None:
            return {}
        target = self._need_target(cmd)
        if hasattr(target, "camera_ids"):
            return {"camera": camera}
        own = getattr(getattr(target, "source", None), "camera_id", None)
        if own is not None and camera != own:
            raise ProtocolError(f"{cmd}: no camera {camera!r} here; this station has camera {own!r}")
        return {}

    def _dispatch(self, req: ControlRequest) -> Any:
        a = req.args
        if req.cmd == "ping":
            return {"pong": True, "time": format_time(time.time()),
                    "boot_id": self.publisher.boot_id if self.publisher else None}
        cam = self._camera(req.cmd, a.get("camera")) if req.cmd != "last" else {}
        if req.cmd == "status":
            status = self._need_target("status").status(**cam)
            if not isinstance(status, dict):
                raise ProtocolError(f"status: the pipeline returned {type(status).__name__}, not a dict")
            return status
        if req.cmd == "trigger":
            ret = self._need_target("trigger").trigger(a["part_id"], **cam)
            return ret if isinstance(ret, dict) else {"part_id": a["part_id"]}
        if req.cmd == "set_threshold":
            ret = self._need_target("set_threshold").set_threshold(a["image"], a["pixel"], **cam)
            return ret if isinstance(ret, dict) else {"image": a["image"], "pixel": a["pixel"]}
        if req.cmd == "reload":
            ret = self._need_target("reload").reload(a["model_dir"], **cam)
            return ret if isinstance(ret, dict) else {"model_dir": a["model_dir"]}
        if req.cmd == "last":
            if self.publisher is None:
                raise ProtocolError("last: no publisher attached to this control channel")
            camera = a.get("camera")
            msgs = self.publisher.last(a["since_seq"], a["n"], camera) if camera else self.publisher.last(
                a["since_seq"], a["n"])
            return {
                "boot_id": self.publisher.boot_id,
                "line_id": self.publisher.line_id,
                "camera_id": camera or self.publisher.camera_id,
                "verdicts": [m.body() for m in msgs],
            }
        raise ProtocolError(f"unknown command {req.cmd!r}")  # unreachable: the parser knows the commands


class ControlClient:
    """DEALER client for the control channel; one outstanding request at a time, replies matched by id.

    ``request("last", since_seq=10, n=5, timeout_s=2.0) -> dict`` returns the reply's result; raises
    ProtocolError on an error reply, a malformed reply or no reply within timeout_s.
    """

    def __init__(self, endpoint: str, keys: ClientKeys | None = None):
        self.endpoint = endpoint
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        secure_client(self._sock, keys)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ProtocolError(f"control endpoint {endpoint!r}: {exc}") from None
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self) & 0xFFFF:x}-"

    def request_reply(self, cmd: str, timeout_s: float = 2.0, **args: Any) -> ControlReply:
        """Send one request; return the ControlReply (ok or not). ProtocolError on timeout or garbage."""
        req_id = f"{self._prefix}{next(self._ids)}"
        frames = ControlRequest(cmd=cmd, args=args, id=req_id).to_frames()
        self._sock.send_multipart([b""] + frames)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1):
                raise ProtocolError(f"control {self.endpoint}: no reply to {cmd!r} within {timeout_s:g} s")
            parts = self._sock.recv_multipart()
            reply = ControlReply.from_frames(parts[-1:])
            if reply.id == req_id:
                return reply
            log.debug("control client: skipped a late reply (id %r)", reply.id)

    def request(self, cmd: str, timeout_s: float = 2.0, **args: Any) -> Any:
        reply = self.request_reply(cmd, timeout_s=timeout_s, **args)
        if not reply.ok:
            raise ProtocolError(f"control {cmd}: {reply.error}")
        return reply.result

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Control channel: a ROUTER socket in its own thread answering JSON requests, and a small client.

Requests and replies are ``ControlRequest`` / ``ControlReply`` (protocol.messages). REQ and DEALER clients
both work: every frame before the last is the routing envelope and is echoed back unchanged.
A request that fails validation, names an unknown command, or makes the target raise gets
``{"ok": false, "error": ...}`` and changes nothing; nothing a client sends ends the server thread.

The target (the pipeline) is called from the control thread, so its methods must be thread-safe:
    status() -> dict; trigger(part_id: str); set_threshold(image: float | None, pixel: float | None);
    reload(model_dir: str). They raise EdgeInspectError subclasses for refusals (the message is replied).
"""

from __future__ import annotations

import itertools
import logging
import os
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


class ControlServer:
    """``ControlServer(settings, security, target, publisher=None).start()``; ``.endpoint`` once started."""

    def __init__(self, settings: ControlSettings, security: SecuritySettings, target: Any, publisher: VerdictPublisher | None = None):
        self.settings = settings
        self.security = security
        self.target = target
        self.publisher = publisher
        self.endpoint: str | None = None
        self.requests = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._curve = None

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
        except BaseException:
            if self._curve is not None:
                self._curve.stop()
            self._ctx.destroy(linger=0)
            raise
        self._thread = threading.Thread(target=self._run, args=(sock,), name="control", daemon=True)
        self._thread.start()
        log.info("control channel on %s", self.endpoint)
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._curve is not None:
            self._curve.stop()
        self._ctx.term()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, sock: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if not sock.poll(100):
                        continue
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                except zmq.ZMQError as exc:
                    log.warning("control: receive failed: %s", exc)
                    time.sleep(0.01)
                    continue
                if len(frames) < 2:  # ROUTER always prefixes the peer identity; anything else is noise
                    continue
                reply = self.handle(frames[-1])
                try:
                    sock.send_multipart(frames[:-1] + [reply], zmq.NOBLOCK)
                except zmq.ZMQError as exc:  # peer gone or its queue full: the reply is lost, not the server
                    log.warning("control: reply not sent: %s", exc)
        finally:
            sock.close()

    def handle(self, raw: bytes) -> bytes:
        """One request frame -> one reply frame. Never raises (the fuzz tests hold it to that)."""
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
            self.errors += 1
            log.info("control: %s refused: %s", cmd or "request", exc)
            return ControlReply(ok=False, cmd=cmd, error=str(exc), id=req_id).to_frames()[0]
        except Exception as exc:  # a target bug must not kill the control thread
            self.errors += 1
            log.exception("control: %s failed", cmd or "request")
            return ControlReply(ok=False, cmd=cmd, error=f"internal error: {type(exc).__name__}: {exc}", id=req_id).to_frames()[0]

    def _need_target(self, cmd: str) -> Any:
        if self.target is None:
            raise ProtocolError(f"{cmd}: no pipeline attached to this control channel")
        return self.target

    def _dispatch(self, req: ControlRequest) -> Any:
        a = req.args
        if req.cmd == "ping":
            return {"pong": True, "time": format_time(time.time()), "boot_id": self.publisher.boot_id if self.publisher else None}
        if req.cmd == "status":
            status = self._need_target("status").status()
            if not isinstance(status, dict):
                raise ProtocolError(f"status: the pipeline returned {type(status).__name__}, not a dict")
            return status
        if req.cmd == "trigger":
            ret = self._need_target("trigger").trigger(a["part_id"])
            return ret if isinstance(ret, dict) else {"part_id": a["part_id"]}
        if req.cmd == "set_threshold":
            ret = self._need_target("set_threshold").set_threshold(a["image"], a["pixel"])
            return ret if isinstance(ret, dict) else {"image": a["image"], "pixel": a["pixel"]}
        if req.cmd == "reload":
            ret = self._need_target("reload").reload(a["model_dir"])
            return ret if isinstance(ret, dict) else {"model_dir": a["model_dir"]}
        if req.cmd == "last":
            if self.publisher is None:
                raise ProtocolError("last: no publisher attached to this control channel")
            msgs = self.publisher.last(a["since_seq"], a["n"])
            return {
                "boot_id": self.publisher.boot_id,
                "line_id": self.publisher.line_id,
                "camera_id": self.publisher.camera_id,
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

"""Verdict publisher: the one owner of the PUB socket, its send queue and the heartbeat clock.

One sender thread owns the socket (ZeroMQ sockets are not thread-safe) and the heartbeat clock, as in
zguide's clone server: it sends what is queued and, every ``heartbeat_s``, a heartbeat. Nobody else
times heartbeats: a caller hands over a *status provider* (``attach_status``), a callable the sender
thread asks for the status at each beat (so the numbers are never stale, the final "stopped" heartbeat
included), and may ask for a beat now when something changed (``beat_soon``, e.g. the camera was lost).

``publish()`` may be called from any thread: it only builds the message, stores it in the history (for
the control channel's ``last``) and does ``put_nowait``; it never waits on the network. A full queue is a
counted publish drop, kept here only (``counters()``; heartbeats carry it in ``publisher``): the message
stays in the history, so a subscriber sees the ``msg_seq`` gap and can resync it. A slow subscriber
costs nothing here either: at SNDHWM ZeroMQ drops for that subscriber only, who sees gaps.

Several cameras, one socket (a station, pipeline.station): ``channel(camera_id)`` gives a VerdictSink for
one more camera on the same socket and sender thread. Each camera keeps its own topic, msg_seq, history,
status provider and heartbeat (``heartbeat.<line>.<camera>``), so a subscriber to one camera sees exactly
what a single-camera station would send. The camera given to the constructor is the first channel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import zmq

from ..errors import ConfigError, ProtocolError
from ..verdict import Verdict
from .messages import HeartbeatMsg, VerdictMsg, check_id, check_status, dumps_json, format_time
from .security import server_for
from .settings import PublisherSettings, SecuritySettings

log = logging.getLogger(__name__)

_STOP = object()
_BEAT = object()  # wakes the sender thread for a heartbeat now (beat_soon)

StatusProvider = Callable[[], dict]


def bind_socket(sock: zmq.Socket, endpoint: str, what: str) -> str:
    """Bind and return the actual endpoint (resolves ``tcp://host:*`` to the chosen port)."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(f"{what} {endpoint!r}: cannot bind ({exc})") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class _Channel:
    """One camera's share of the publisher: its msg_seq, history, status provider and heartbeat status.
    Guarded by the publisher's lock, except ``last_sent_msg_seq`` (written by the sender thread only)."""

    def __init__(self, camera_id: str, history: int, provider: StatusProvider | None = None):
        self.camera_id = camera_id
        self.history: deque[VerdictMsg] = deque(maxlen=history)
        self.status: dict = {"state": "starting"}  # the last status sent (or set by heartbeat())
        self.provider = provider
        self.provider_error: str | None = None  # the last refusal of the provider's status, said once
        self.next_msg_seq = 0
        self.last_sent_msg_seq = -1
        self.closed = False  # its final heartbeat went out (CameraChannel.close)


class VerdictPublisher:
    """PUB socket for one camera's verdicts and heartbeats.

    publish(verdict) -> VerdictMsg   never blocks; assigns msg_seq, keeps a history copy (no heat map); any thread
    attach_status(provider)           heartbeats carry provider() from now on, asked at each beat by the sender thread
    beat_soon()                       send a heartbeat now rather than at the next tick (the status changed)
    heartbeat(status)                 a fixed status for callers without a provider (checked here, at the call)
    last(since_seq, n)                stored messages: frame seq > since_seq, oldest first (None: the newest n)
    counters()                        published / dropped / queued / heartbeats
    """

    def __init__(self, settings: PublisherSettings, security: SecuritySettings, camera_id: str = "cam0",
                 status: StatusProvider | None = None):
        self.settings = settings
        self.line_id = check_id(settings.line_id, "publisher.line_id")
        self.camera_id = check_id(camera_id, "camera_id")
        self.boot_id = str(uuid.uuid4())
        self._t_start = time.monotonic()
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._default = _Channel(self.camera_id, settings.history, status)
        self._channels: dict[str, _Channel] = {self.camera_id: self._default}
        self._beat_now = threading.Event()
        self.published = 0  # verdict messages handed to ZeroMQ
        self.dropped = 0  # verdict messages not sent: queue full or socket refused
        self.heartbeats = 0
        self._closed = False

        self._ctx = zmq.Context()
        self._curve = None
        try:
            self._curve = server_for(self._ctx, security, settings.bind, "publisher")
            sock = self._ctx.socket(zmq.PUB)
            sock.setsockopt(zmq.SNDHWM, settings.sndhwm)
            sock.setsockopt(zmq.LINGER, settings.linger_ms)
            if self._curve is not None:
                self._curve.secure(sock)
            self.endpoint = bind_socket(sock, settings.bind, "publisher.bind")
        except BaseException:
            if self._curve is not None:
                self._curve.stop()
            self._ctx.destroy(linger=0)
            raise
        self._sock = sock  # from here on used by the sender thread only
        self._thread = threading.Thread(target=self._run, name=f"publisher-{self.camera_id}", daemon=True)
        self._thread.start()
        log.info("publisher %s: line %s camera %s boot %s", self.endpoint, self.line_id, self.camera_id, self.boot_id)

    # ----- caller side (inference loop) -----

    def channel(self, camera_id: str) -> CameraChannel:
        """A VerdictSink for ``camera_id`` on this socket (created on first use; the constructor's camera too).
        ProtocolError for an id that cannot be part of a topic."""
        camera_id = check_id(camera_id, "camera_id")
        with self._lock:
            if camera_id not in self._channels:
                self._channels[camera_id] = _Channel(camera_id, self.settings.history)
        return CameraChannel(self, camera_id)

    @property
    def camera_ids(self) -> list[str]:
        with self._lock:
            return list(self._channels)

    def publish(self, verdict: Verdict) -> VerdictMsg:
        """Queue ``verdict`` for sending; returns the message with its msg_seq. Never waits on the network."""
        return self._publish(verdict, self._default)

    def _publish(self, verdict: Verdict, ch: _Channel) -> VerdictMsg:
        if self._closed or ch.closed:
            raise ProtocolError("publish() on a closed publisher")
        if verdict.camera_id != ch.camera_id:
            raise ProtocolError(f"verdict for camera {verdict.camera_id!r} given to the publisher of camera "
                                f"{ch.camera_id!r}")
        msg = VerdictMsg.from_verdict(verdict, self.line_id, self.boot_id, msg_seq=0,
                                      with_heatmap=self.settings.send_heatmap)
        with self._lock:
            msg.msg_seq = ch.next_msg_seq
            ch.next_msg_seq += 1
            if ch.history.maxlen:
                ch.history.append(replace(msg, heatmap=None) if msg.heatmap is not None else msg)
            try:
                self._queue.put_nowait(msg)
            except queue.Full:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("publisher %s: send queue full, dropped %d verdict(s) so far",
                                self.endpoint, self.dropped)
        return msg

    def heartbeat(self, status: dict) -> None:
        """Replace the status carried by heartbeats (keys: state, fps, drops, errors, backend, drift, ...), for
        callers without a status provider; the heartbeat clock stays here.

        Raises ProtocolError (and keeps the previous status) for a status the heartbeat schema or JSON refuses,
        so the caller hears of it and the sender thread never meets an unsendable heartbeat.
        """
        _check_sendable(status)
        with self._lock:
            self._default.status = dict(status)

    def attach_status(self, provider: StatusProvider | None) -> None:
        """From now on each heartbeat carries ``provider()``, called by the sender thread at each beat (and
        once more for the final heartbeat at close). A status it cannot send (not JSON, refused by the
        heartbeat schema) or a provider that raises is logged once, and the last good status goes out."""
        with self._lock:
            self._default.provider = provider

    def beat_soon(self) -> None:
        """Ask for a heartbeat now (the status changed, e.g. the camera was lost), not at the next tick."""
        self._beat_now.set()
        try:
            self._queue.put_nowait(_BEAT)
        except queue.Full:  # the sender thread is busy and sees the flag after the next message
            pass

    def counters(self) -> dict:
        """{"published", "dropped", "queued", "heartbeats"}: this publisher's own figures (kept here only)."""
        with self._lock:
            return {"published": self.published, "dropped": self.dropped, "queued": self._queue.qsize(),
                    "heartbeats": self.heartbeats}

    def last(self, since_seq: int | None = None, n: int | None = None,
             camera_id: str | None = None) -> list[VerdictMsg]:
        """Stored verdicts (without heat maps): frame seq > since_seq, oldest first, at most n;
        since_seq None: the newest n. n None: as many as the history holds.
        camera_id: whose history (None: the constructor's camera); ProtocolError for an unknown camera."""
        with self._lock:
            ch = self._default if camera_id is None else self._channels.get(camera_id)
            if ch is None:
                raise ProtocolError(f"no camera {camera_id!r} on this station; cameras: {', '.join(self._channels)}")
            items = list(ch.history)
        n = len(items) if n is None else max(0, n)
        if since_seq is None:
            return items[len(items) - n:] if n else []
        return [m for m in items if m.seq > since_seq][:n]

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._t_start

    def close(self) -> None:
        """Send what is queued, a final heartbeat (state 'stopped', with the provider's status as it is now,
        i.e. after the caller's final counts), then close (waiting up to linger_ms)."""
        if self._closed:
            return
        self._closed = True
        while self._thread.is_alive():  # a full queue drains; a dead sender thread must not hang close()
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        if self._curve is not None:
            self._curve.stop()
        self._ctx.term()
        log.info("publisher %s closed: %d published, %d dropped", self.endpoint, self.published, self.dropped)

    def __enter__(self) -> VerdictPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- sender thread -----

    def _current_status(self, ch: _Channel) -> dict:
        """The status for the next beat: the provider's, when it gives one that can be sent; else the last good."""
        with self._lock:
            provider = ch.provider
        if provider is not None:
            try:
                status = provider()
                _check_sendable(status)
            except Exception as exc:  # noqa: BLE001 - a provider bug or an unsendable status must not stop the heartbeats
                why = f"{type(exc).__name__}: {exc}"
                if why != ch.provider_error:
                    log.error("publisher %s: heartbeat status of camera %s refused, sending the last good one: %s",
                              self.endpoint, ch.camera_id, why)
                    ch.provider_error = why
            else:
                ch.provider_error = None
                with self._lock:
                    ch.status = dict(status)
        with self._lock:
            return dict(ch.status)

    def _heartbeat_msg(self, final: bool = False, ch: _Channel | None = None) -> HeartbeatMsg:
        ch = ch or self._default
        status = self._current_status(ch)
        if final:
            status["state"] = "stopped"
        return HeartbeatMsg(
            line_id=self.line_id,
            camera_id=ch.camera_id,
            boot_id=self.boot_id,
            time=format_time(time.time()),
            uptime_s=round(self.uptime_s, 3),
            interval_s=self.settings.heartbeat_s,
            last_msg_seq=ch.last_sent_msg_seq,
            status=status,
            publisher={"published": self.published, "dropped": self.dropped, "queued": self._queue.qsize()},
        )

    def _send(self, frames: list[bytes]) -> bool:
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=len(frames) < 3)
            return True
        except zmq.Again:  # PUB drops at HWM instead; kept for socket types/versions that refuse
            return False

    def _beat(self, final: bool = False) -> None:
        """Send one heartbeat per camera still open (every camera's final one when ``final``)."""
        with self._lock:
            channels = [ch for ch in self._channels.values() if not ch.closed]
        for ch in channels:
            self._beat_one(ch, final)

    def _beat_one(self, ch: _Channel, final: bool = False) -> None:
        """Send one heartbeat. One that cannot be encoded is logged and skipped: the sender thread must live
        on (heartbeat() checks the status first, so this is a last line of defence)."""
        try:
            frames = self._heartbeat_msg(final, ch).to_frames()
        except ProtocolError as exc:
            log.error("publisher %s: heartbeat not sent: %s", self.endpoint, exc)
            return
        self._send(frames)
        if not final:
            self.heartbeats += 1

    def _run(self) -> None:
        interval = self.settings.heartbeat_s
        next_beat = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_beat - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if isinstance(item, _Channel):  # that camera's pipeline has ended: its final heartbeat
                    self._beat_one(item, final=True)
                    with self._lock:
                        item.closed = True
                    continue
                if item is not None and item is not _BEAT:
                    try:
                        frames = item.to_frames(validate=False)  # validated in publish()
                    except ProtocolError as exc:  # cannot happen for messages built by from_verdict
                        log.error("publisher: dropped unencodable verdict msg_seq %d: %s", item.msg_seq, exc)
                        frames = None
                    sent = frames is not None and self._send(frames)
                    with self._lock:
                        if sent:
                            self.published += 1
                        else:
                            self.dropped += 1
                    ch = self._channels.get(item.camera_id)
                    if ch is not None:
                        ch.last_sent_msg_seq = item.msg_seq
                now = time.monotonic()
                if self._beat_now.is_set():  # asked for (beat_soon): now, and the clock starts again
                    self._beat_now.clear()
                    self._beat()
                    next_beat = now + interval
                elif now >= next_beat:
                    self._beat()
                    next_beat += interval
                    if next_beat <= now:  # after a stall: no burst of catch-up beats
                        next_beat = now + interval
            self._beat(final=True)
        except Exception:  # never die silently: the pipeline would keep publishing into a void
            log.exception("publisher %s: sender thread failed", self.endpoint)
        finally:
            self._sock.close()  # honours LINGER


def _check_sendable(status) -> None:
    """ProtocolError unless ``status`` is a JSON object the heartbeat schema accepts."""
    try:
        dumps_json(status)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"heartbeat status is not JSON-serialisable: {exc}") from None
    check_status(status)


class CameraChannel:
    """One camera's VerdictSink on a shared VerdictPublisher (see ``VerdictPublisher.channel``).

    ``close`` sends this camera's final heartbeat (state "stopped") after what it queued; the socket
    stays open for the other cameras until the publisher itself is closed.
    """

    def __init__(self, publisher: VerdictPublisher, camera_id: str):
        self._pub = publisher
        self.camera_id = camera_id
        self._ch = publisher._channels[camera_id]

    def publish(self, verdict: Verdict) -> VerdictMsg:
        return self._pub._publish(verdict, self._ch)

    def attach_status(self, provider: StatusProvider | None) -> None:
        with self._pub._lock:
            self._ch.provider = provider

    def beat_soon(self) -> None:
        self._pub.beat_soon()

    def last(self, since_seq: int | None = None, n: int | None = None) -> list[VerdictMsg]:
        return self._pub.last(since_seq, n, self.camera_id)

    def close(self) -> None:
        """Queue this camera's final heartbeat behind its verdicts (no-op once the publisher is closed)."""
        pub = self._pub
        if pub._closed or self._ch.closed:
            return
        while pub._thread.is_alive():
            try:
                pub._queue.put(self._ch, timeout=0.1)
                return
            except queue.Full:
                continue

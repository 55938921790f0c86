"""Reference subscriber: what a PLC gateway needs to trust the verdict stream.

For each camera (line_id, camera_id) it tracks boot_id and msg_seq:
- a new boot_id is a publisher restart (counting starts again at msg_seq 0), not a gap;
- a jump in msg_seq within a boot is a gap (messages lost in transit or dropped at the publisher's
  high-water mark); with a control endpoint the gap is filled from the publisher's history (``last``);
- a heartbeat whose last_msg_seq is ahead of what arrived reveals a lost tail message;
- a jump in the frame ``seq`` with contiguous msg_seq means the station skipped frames (free-run mode
  drops frames on purpose); counted, not resynced (there is nothing to resend).
Every message is validated; an invalid one is an ``invalid`` event and is counted, never a crash.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from ..errors import ProtocolError
from .control import ControlClient
from .messages import HEARTBEAT_PREFIX, VERDICT_PREFIX, HeartbeatMsg, VerdictMsg
from .security import ClientKeys, secure_client

log = logging.getLogger(__name__)


@dataclass
class Event:
    """kind: verdict | heartbeat | gap | restart | invalid. ``resynced``: a verdict fetched via ``last``."""

    kind: str
    msg: VerdictMsg | HeartbeatMsg | None = None
    resynced: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ListenerStats:
    received: int = 0  # live verdicts
    resynced: int = 0  # verdicts recovered through the control channel
    ok: int = 0
    ng: int = 0
    unknown: int = 0
    gaps: int = 0  # gap events
    missing: int = 0  # verdict messages missing in those gaps
    unrecovered: int = 0  # ... of which resync could not fetch
    restarts: int = 0
    invalid: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    frames_skipped: int = 0  # frame seq jumps the station reported by design (not transport losses)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _CameraState:
    boot_id: str
    last_msg_seq: int  # -1: nothing received this boot
    last_seq: int | None  # frame seq of the last verdict received this boot


class VerdictListener:
    """SUB socket on one or more publishers; ``poll(timeout_s)`` returns the events of one received message."""

    def __init__(
        self,
        connect: str | list[str],
        topic: str = "verdict.",
        control: str | None = None,
        keys: ClientKeys | None = None,
        control_keys: ClientKeys | None = None,
        control_timeout_s: float = 2.0,
        rcvhwm: int = 10_000,
    ):
        if not topic.startswith(VERDICT_PREFIX):
            raise ProtocolError(f"topic {topic!r}: must start with '{VERDICT_PREFIX}' (e.g. 'verdict.line1.')")
        self.stats = ListenerStats()
        self._cameras: dict[tuple[str, str], _CameraState] = {}
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
        secure_client(self._sock, keys)
        self._sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        # Heartbeats of the same cameras: "verdict.line1." -> "heartbeat.line1."
        self._sock.setsockopt_string(zmq.SUBSCRIBE, HEARTBEAT_PREFIX + topic[len(VERDICT_PREFIX):])
        for endpoint in [connect] if isinstance(connect, str) else connect:
            try:
                self._sock.connect(endpoint)
            except zmq.ZMQError as exc:
                self.close()
                raise ProtocolError(f"cannot connect to {endpoint!r}: {exc}") from None
        self._control = ControlClient(control, control_keys or keys) if control else None
        self._control_timeout_s = control_timeout_s

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if not self._ctx.closed:
            self._sock.close(linger=0)
            self._ctx.term()

    def __enter__(self) -> VerdictListener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def poll(self, timeout_s: float) -> list[Event]:
        """Wait up to timeout_s for one message; return its events (empty list on timeout)."""
        if not self._sock.poll(int(timeout_s * 1000)):
            return []
        return self.handle_frames(self._sock.recv_multipart())

    def handle_frames(self, frames: list[bytes]) -> list[Event]:
        """Validate one multipart message and update the per-camera tracking."""
        is_heartbeat = bool(frames) and bytes(frames[0]).startswith(HEARTBEAT_PREFIX.encode() + b".")
        try:
            msg = HeartbeatMsg.from_frames(frames) if is_heartbeat else VerdictMsg.from_frames(frames)
        except ProtocolError as exc:
            self.stats.invalid += 1
            topic = bytes(frames[0][:80]).decode("ascii", "replace") if frames else ""
            return [Event("invalid", detail={"topic": topic, "error": str(exc)})]
        if isinstance(msg, HeartbeatMsg):
            return self._on_heartbeat(msg)
        return self._on_verdict(msg)

    # ----- tracking -----

    def _state(self, key: tuple[str, str], boot_id: str, events: list[Event]) -> tuple[_CameraState, bool]:
        """The camera's state; on first sight or a new boot_id, a fresh one (a restart event if it changed)."""
        state = self._cameras.get(key)
        if state is not None and state.boot_id == boot_id:
            return state, False
        if state is not None:
            self.stats.restarts += 1
            events.append(Event("restart", detail={"line_id": key[0], "camera_id": key[1],
                                                   "old_boot_id": state.boot_id, "new_boot_id": boot_id}))
        fresh = _CameraState(boot_id=boot_id, last_msg_seq=-1, last_seq=None)
        self._cameras[key] = fresh
        return fresh, state is None

    def _on_heartbeat(self, hb: HeartbeatMsg) -> list[Event]:
        self.stats.heartbeats += 1
        events: list[Event] = []
        key = (hb.line_id, hb.camera_id)
        state, first_sight = self._state(key, hb.boot_id, events)
        if first_sight:
            state.last_msg_seq = hb.last_msg_seq  # joined mid-stream: earlier messages are not ours to miss
        elif hb.last_msg_seq > state.last_msg_seq:
            events += self._gap(key, state, state.last_msg_seq + 1, hb.last_msg_seq)
        events.append(Event("heartbeat", msg=hb))
        return events

    def _on_verdict(self, msg: VerdictMsg) -> list[Event]:
        events: list[Event] = []
        key = (msg.line_id, msg.camera_id)
        state, first_sight = self._state(key, msg.boot_id, events)
        if msg.msg_seq <= state.last_msg_seq:
            self.stats.duplicates += 1
            return events
        if not first_sight and msg.msg_seq > state.last_msg_seq + 1:
            events += self._gap(key, state, state.last_msg_seq + 1, msg.msg_seq - 1)
        self._accept(state, msg)
        events.append(Event("verdict", msg=msg))
        return events

    def _accept(self, state: _CameraState, msg: VerdictMsg, resynced: bool = False) -> None:
        contiguous = msg.msg_seq == state.last_msg_seq + 1  # else a seq jump may hide lost messages
        if contiguous and state.last_seq is not None and msg.seq > state.last_seq + 1:
            self.stats.frames_skipped += msg.seq - state.last_seq - 1
        state.last_msg_seq = max(state.last_msg_seq, msg.msg_seq)
        state.last_seq = msg.seq if state.last_seq is None else max(state.last_seq, msg.seq)
        if resynced:
            self.stats.resynced += 1
        else:
            self.stats.received += 1
        setattr(self.stats, msg.result_state, getattr(self.stats, msg.result_state) + 1)

    def _gap(self, key: tuple[str, str], state: _CameraState, first: int, last: int) -> list[Event]:
        """Messages first..last (msg_seq) are missing: report, and fetch them via ``last`` if we can."""
        missing = last - first + 1
        self.stats.gaps += 1
        self.stats.missing += missing
        recovered: list[VerdictMsg] = []
        error = None
        if self._control is None:
            error = "no control endpoint to resync from"
        else:
            try:
                recovered = self._fetch(key, state, first, last)
            except ProtocolError as exc:
                error = str(exc)
            if not error and len(recovered) < missing:
                error = f"history no longer holds {missing - len(recovered)} of them"
        self.stats.unrecovered += missing - len(recovered)
        events = [Event("gap", detail={"line_id": key[0], "camera_id": key[1], "boot_id": state.boot_id,
                                       "first_msg_seq": first, "last_msg_seq": last, "missing": missing,
                                       "recovered": len(recovered), "error": error})]
        for m in recovered:
            self._accept(state, m, resynced=True)
            events.append(Event("verdict", msg=m, resynced=True))
        state.last_msg_seq = max(state.last_msg_seq, last)  # what stays missing is counted, not re-asked
        return events

    def _fetch(self, key: tuple[str, str], state: _CameraState, first: int, last: int) -> list[VerdictMsg]:
        # Everything after the last frame we hold (or the whole history if we hold none this boot), then
        # filter by msg_seq: asking for exactly n would return the wrong ones after an unrecovered gap.
        args = {} if state.last_seq is None else {"since_seq": state.last_seq}
        result = self._control.request("last", timeout_s=self._control_timeout_s, **args)
        if not isinstance(result, dict) or not isinstance(result.get("verdicts"), list):
            raise ProtocolError("control last: reply has no 'verdicts' list")
        if result.get("boot_id") != state.boot_id:
            raise ProtocolError(f"control last: publisher boot {result.get('boot_id')} is not {state.boot_id} (restarted?)")
        out = []
        for body in result["verdicts"]:
            try:
                m = VerdictMsg.from_body(body)
            except ProtocolError as exc:
                self.stats.invalid += 1
                log.warning("resync: invalid verdict body: %s", exc)
                continue
            if (m.line_id, m.camera_id) == key and m.boot_id == state.boot_id and first <= m.msg_seq <= last:
                out.append(m)
        return sorted(out, key=lambda m: m.msg_seq)


def format_event(ev: Event) -> str:
    """One human-readable line per event (what ``edge-inspect listen`` prints)."""
    if ev.kind == "verdict":
        m = ev.msg
        score = "-" if m.score is None else f"{m.score:.4f}"
        parts = [
            m.decision_time,
            f"{m.line_id}/{m.camera_id}",
            f"seq={m.seq}",
            m.result_state.upper().ljust(7),
            f"score={score}",
            f"thr={m.threshold:.4f}",
        ]
        if m.part_id is not None:
            parts.append(f"part={m.part_id}")
        if m.regions:
            parts.append(f"regions={len(m.regions)}")
        if m.latency_ms:
            parts.append(f"latency={sum(m.latency_ms.values()):.1f}ms")
        if m.heatmap is not None:
            parts.append(f"heatmap={m.heatmap.shape[1]}x{m.heatmap.shape[0]}")
        if m.error:
            parts.append(f"error={m.error!r}")
        if ev.resynced:
            parts.append("(resynced)")
        return " ".join(parts)
    d = ev.detail
    if ev.kind == "gap":
        how = f"resynced {d['recovered']}" + (f", {d['missing'] - d['recovered']} lost: {d['error']}" if d["error"] else "")
        return (f"GAP     {d['line_id']}/{d['camera_id']}: missing msg_seq {d['first_msg_seq']}..{d['last_msg_seq']} "
                f"({d['missing']}); {how}")
    if ev.kind == "restart":
        return (f"RESTART {d['line_id']}/{d['camera_id']}: boot {d['old_boot_id'][:8]} -> {d['new_boot_id'][:8]} "
                "(publisher restarted; sequence numbers start again)")
    if ev.kind == "invalid":
        return f"INVALID {d['topic']!r}: {d['error']}"
    if ev.kind == "heartbeat":
        hb = ev.msg
        st = hb.status
        return (f"HEARTBEAT {hb.line_id}/{hb.camera_id} state={st.get('state', '?')} fps={st.get('fps', '?')} "
                f"drops={st.get('drops', '?')} errors={st.get('errors', '?')} backend={st.get('backend', '?')} "
                f"uptime={hb.uptime_s:.0f}s")
    return f"{ev.kind.upper()} {d}"


def event_json(ev: Event) -> dict:
    """One JSON-lines record per event: verdicts are their wire body plus "event" and "resynced"."""
    if ev.kind == "verdict":
        return {"event": "verdict", "resynced": ev.resynced, **ev.msg.body()}
    if ev.kind == "heartbeat":
        return {"event": "heartbeat", **ev.msg.body()}
    return {"event": ev.kind, **ev.detail}


def format_summary(stats: ListenerStats) -> str:
    s = stats
    return (
        f"summary: received {s.received} live + {s.resynced} resynced (ok {s.ok}, ng {s.ng}, unknown {s.unknown}); "
        f"gaps {s.gaps} (missing {s.missing}, unrecovered {s.unrecovered}); restarts {s.restarts}; "
        f"invalid {s.invalid}; duplicates {s.duplicates}; frames skipped by the station {s.frames_skipped}; "
        f"heartbeats {s.heartbeats}"
    )


def run_until(listener: VerdictListener, count: int | None, timeout_s: float | None, on_event) -> bool:
    """Feed events to on_event until ``count`` verdicts (live + resynced) or ``timeout_s``; True if count reached."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if count is not None and listener.stats.received + listener.stats.resynced >= count:
            return True
        wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if wait <= 0:
            return count is None
        for ev in listener.poll(wait):
            on_event(ev)

"""Reference subscriber: what a PLC gateway needs to trust the verdict stream.

For each camera (line_id, camera_id) it tracks boot_id and msg_seq:
- a new boot_id is a publisher restart (counting starts again at msg_seq 0), not a gap;
- a jump in msg_seq within a boot is a gap (messages lost in transit or dropped at the publisher's
  high-water mark); with a control endpoint the gap is filled from the publisher's history (``last``);
- a heartbeat whose last_msg_seq is ahead of what arrived reveals a lost tail message;
- a jump in the frame ``seq`` with contiguous msg_seq means the station skipped frames (free-run mode
  drops frames on purpose); counted, not resynced (there is nothing to resend).
Every message is validated; an invalid one is an ``invalid`` event and is counted, never a crash.

Restarting the subscriber: a ``ResumePoint`` per camera (from a ``StateFile`` the previous run kept, or
``resume_from``) makes what the station sent meanwhile a gap (``while_down``) that is fetched like any
other; without one, what the station sent before first contact is reported (``join``) and counted as
``not_requested``. Either way the output says what was missed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zmq
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, ProtocolError
from .control import ControlClient
from .endpoints import normalise_endpoint
from .messages import HEARTBEAT_PREFIX, VERDICT_PREFIX, HeartbeatMsg, LastResult, VerdictMsg
from .messages.common import Count, Id, Uuid
from .security import ClientKeys, secure_client

log = logging.getLogger(__name__)


@dataclass
class Event:
    """kind: verdict | heartbeat | gap | restart | join | resume | invalid. ``resynced``: a verdict fetched
    via ``last``."""

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
    missed_while_down: int = 0  # of ``missing``: sent while this subscriber was not running (resumed)
    not_requested: int = 0  # sent before first contact, with no resume point to fetch them from

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class ResumePoint:
    """Where a previous run stopped for one camera: everything from ``next_msg_seq`` on is wanted.
    ``boot_id`` None: whichever boot the station is in now (``resume_from``); ``last_seq``: the frame seq
    of the last verdict held (narrows the ``last`` request)."""

    next_msg_seq: int
    boot_id: str | None = None
    last_seq: int | None = None


@dataclass
class _CameraState:
    boot_id: str
    last_msg_seq: int  # -1: nothing received this boot
    last_seq: int | None  # frame seq of the last verdict received this boot
    resume: ResumePoint | None = None  # until the first message after a resume has been checked


class VerdictListener:
    """SUB socket on one or more publishers; ``poll(timeout_s)`` returns the events of one received message.

    Endpoints may omit ``tcp://`` (see endpoints.py). ``resume``: per camera, where a previous run stopped
    (see StateFile); ``resume_from``: the first msg_seq wanted from every camera without one (its boot
    unknown: whatever boot the station is in).
    """

    def __init__(
        self,
        connect: str | list[str],
        topic: str = "verdict.",
        control: str | None = None,
        keys: ClientKeys | None = None,
        control_keys: ClientKeys | None = None,
        control_timeout_s: float = 2.0,
        rcvhwm: int = 10_000,
        resume: dict[tuple[str, str], ResumePoint] | None = None,
        resume_from: int | None = None,
    ):
        self._control: ControlClient | None = None  # before anything can fail: close() must always work
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        if not topic.startswith(VERDICT_PREFIX):
            raise ProtocolError(f"topic {topic!r}: must start with '{VERDICT_PREFIX}' (e.g. 'verdict.line1.')")
        connect = [connect] if isinstance(connect, str) else connect
        endpoints = [normalise_endpoint(e, "connect endpoint") for e in connect]
        control = normalise_endpoint(control, "control endpoint") if control else None
        if resume_from is not None and resume_from < 0:
            raise ConfigError(f"resume from msg_seq {resume_from}: must be >= 0")
        self.stats = ListenerStats()
        self._cameras: dict[tuple[str, str], _CameraState] = {}
        self._resume = dict(resume or {})
        self._resume_from = resume_from
        self._control_timeout_s = control_timeout_s
        try:
            self._ctx = zmq.Context()
            self._sock = self._ctx.socket(zmq.SUB)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
            self._sock.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
            secure_client(self._sock, keys)
            self._sock.setsockopt_string(zmq.SUBSCRIBE, topic)
            # Heartbeats of the same cameras: "verdict.line1." -> "heartbeat.line1."
            self._sock.setsockopt_string(zmq.SUBSCRIBE, HEARTBEAT_PREFIX + topic[len(VERDICT_PREFIX):])
            for endpoint in endpoints:
                try:
                    self._sock.connect(endpoint)
                except zmq.ZMQError as exc:
                    raise ProtocolError(f"cannot connect to {endpoint!r}: {exc}") from None
            self._control = ControlClient(control, control_keys or keys) if control else None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._ctx is not None and not self._ctx.closed:
            if self._sock is not None:
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

    def positions(self) -> dict[tuple[str, str], ResumePoint]:
        """Per camera, where a later run should resume (what a StateFile keeps). Cameras not heard from in
        this run keep the resume point they were given."""
        out = dict(self._resume)
        for key, st in self._cameras.items():
            out[key] = ResumePoint(st.last_msg_seq + 1, st.boot_id, st.last_seq)
        return out

    # ----- tracking -----

    def _state(self, key: tuple[str, str], boot_id: str, events: list[Event]) -> tuple[_CameraState, bool]:
        """The camera's state; on first sight or a new boot_id, a fresh one (a restart event if it changed).
        True when first seen without a resume point (what came before is not ours to miss)."""
        state = self._cameras.get(key)
        if state is not None and state.boot_id == boot_id:
            return state, False
        if state is None:
            point = self._resume.pop(key, None)
            if point is None and self._resume_from is not None:
                point = ResumePoint(self._resume_from)
            if point is None:
                fresh, first_sight = _CameraState(boot_id, -1, None), True
            elif point.boot_id is not None and point.boot_id != boot_id:  # restarted while we were down
                events.append(self._restart(key, point.boot_id, boot_id, while_down=point.next_msg_seq))
                fresh, first_sight = _CameraState(boot_id, -1, None, resume=ResumePoint(0, boot_id)), False
            else:
                last_seq = point.last_seq if point.boot_id is not None else None
                fresh = _CameraState(boot_id, point.next_msg_seq - 1, last_seq, resume=point)
                first_sight = False
        else:
            events.append(self._restart(key, state.boot_id, boot_id))
            fresh, first_sight = _CameraState(boot_id, -1, None), False
        self._cameras[key] = fresh
        return fresh, first_sight

    def _restart(self, key: tuple[str, str], old: str, new: str, while_down: int | None = None) -> Event:
        self.stats.restarts += 1
        detail = {"line_id": key[0], "camera_id": key[1], "old_boot_id": old, "new_boot_id": new,
                  "while_down": while_down is not None}
        if while_down is not None:
            detail["old_resume_from"] = while_down  # what the old boot sent from here on cannot be fetched
        return Event("restart", detail=detail)

    def _on_heartbeat(self, hb: HeartbeatMsg) -> list[Event]:
        self.stats.heartbeats += 1
        events: list[Event] = []
        key = (hb.line_id, hb.camera_id)
        state, first_sight = self._state(key, hb.boot_id, events)
        if first_sight:
            events += self._join(key, state, hb.last_msg_seq)
        else:
            events += self._missing_up_to(key, state, hb.last_msg_seq)
        events.append(Event("heartbeat", msg=hb))
        return events

    def _on_verdict(self, msg: VerdictMsg) -> list[Event]:
        events: list[Event] = []
        key = (msg.line_id, msg.camera_id)
        state, first_sight = self._state(key, msg.boot_id, events)
        if first_sight:
            events += self._join(key, state, msg.msg_seq - 1)
        elif state.resume is not None or msg.msg_seq > state.last_msg_seq + 1:
            events += self._missing_up_to(key, state, msg.msg_seq - 1)
        if msg.msg_seq <= state.last_msg_seq:
            self.stats.duplicates += 1
            return events
        self._accept(state, msg)
        events.append(Event("verdict", msg=msg))
        return events

    def _join(self, key: tuple[str, str], state: _CameraState, newest: int) -> list[Event]:
        """First contact without a resume point: messages 0..newest were sent before; report, not fetch."""
        state.last_msg_seq = newest
        if newest < 0:
            return []
        self.stats.not_requested += newest + 1
        return [Event("join", detail={"line_id": key[0], "camera_id": key[1], "boot_id": state.boot_id,
                                      "not_requested": newest + 1, "first_msg_seq": newest + 1})]

    def _missing_up_to(self, key: tuple[str, str], state: _CameraState, newest: int) -> list[Event]:
        """The station has sent up to msg_seq ``newest``: report a resume, and fetch what is missing."""
        events: list[Event] = []
        while_down = state.resume is not None
        if while_down:
            point, state.resume = state.resume, None
            n = point.next_msg_seq
            detail = {"line_id": key[0], "camera_id": key[1], "boot_id": state.boot_id, "resume_from": n,
                      "station_last_msg_seq": newest, "missed": max(0, newest - n + 1), "error": None}
            if newest < n - 1:  # the station has not sent what we hold
                detail["error"] = (f"the station's last msg_seq is {newest}, behind the resume point: it "
                                   "restarted since, or it is another station; following from "
                                   f"{newest + 1}, nothing fetched")
                state.last_msg_seq, state.last_seq = newest, None
            events.append(Event("resume", detail=detail))
        if newest > state.last_msg_seq:
            events += self._gap(key, state, state.last_msg_seq + 1, newest, while_down)
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

    def _gap(self, key: tuple[str, str], state: _CameraState, first: int, last: int,
             while_down: bool = False) -> list[Event]:
        """Messages first..last (msg_seq) are missing: report, and fetch them via ``last`` if we can."""
        missing = last - first + 1
        self.stats.gaps += 1
        self.stats.missing += missing
        if while_down:
            self.stats.missed_while_down += missing
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
                                       "recovered": len(recovered), "error": error,
                                       "while_down": while_down})]
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
        try:
            history = LastResult.from_result(result)
        except ProtocolError as exc:
            raise ProtocolError(f"control last: {exc}") from None
        if history.boot_id != state.boot_id:
            raise ProtocolError(
                f"control last: publisher boot {history.boot_id} is not {state.boot_id} (restarted?)")
        out = [m for m in history.verdicts if (m.line_id, m.camera_id) == key
               and m.boot_id == state.boot_id and first <= m.msg_seq <= last]
        return sorted(out, key=lambda m: m.msg_seq)


class StateFile:
    """Resume points kept in a JSON file: read at start, written atomically (a temporary file renamed over
    it) as verdicts arrive, at most every ``min_interval_s``, and at the end. A crash can therefore repeat
    the verdicts of the last ``min_interval_s`` in the next run (same boot_id and msg_seq: drop them by
    those); a clean end (count, timeout, Ctrl-C, SIGTERM) repeats nothing."""

    SCHEMA = "edge-inspect/listen-state"

    def __init__(self, path: str | Path, min_interval_s: float = 0.5):
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self._saved: dict | None = None
        self._t_saved = 0.0

    def load(self) -> dict[tuple[str, str], ResumePoint]:
        """The resume points in the file ({} if there is none yet); ConfigError if it is not a state file."""
        if not self.path.exists():
            return {}
        try:
            raw = _StateDoc.model_validate_json(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()
            detail = "; ".join(x.strip() for x in reason[1:3]) if len(reason) > 1 else str(exc)
            raise ConfigError(f"state file {self.path}: not a listen state file ({detail}); delete it to "
                              "start afresh") from None
        return {(c.line_id, c.camera_id): ResumePoint(c.next_msg_seq, c.boot_id, c.last_seq)
                for c in raw.cameras}

    def save(self, points: dict[tuple[str, str], ResumePoint]) -> None:
        """Write the points now (skipped when unchanged). OSError if the file cannot be written."""
        doc = {"schema": self.SCHEMA, "version": 1, "cameras": [
            {"line_id": k[0], "camera_id": k[1], "boot_id": p.boot_id, "next_msg_seq": p.next_msg_seq,
             "last_seq": p.last_seq} for k, p in sorted(points.items())]}
        self._t_saved = time.monotonic()
        if doc == self._saved:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._saved = doc

    def maybe_save(self, points: dict[tuple[str, str], ResumePoint]) -> None:
        """save() unless the last one was less than min_interval_s ago; a failed write is logged, not fatal
        (the run goes on; the next write tries again)."""
        if time.monotonic() - self._t_saved < self.min_interval_s:
            return
        try:
            self.save(points)
        except OSError as exc:
            log.warning("state file %s not written: %s", self.path, exc)


class _StateCamera(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_id: Id
    camera_id: Id
    boot_id: Uuid | None
    next_msg_seq: Count
    last_seq: Count | None


class _StateDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: Literal["edge-inspect/listen-state"] = Field(alias="schema")
    version: Literal[1]
    cameras: list[_StateCamera]


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
    cam = f"{d.get('line_id')}/{d.get('camera_id')}"
    if ev.kind == "gap":
        lost = f", {d['missing'] - d['recovered']} lost: {d['error']}" if d["error"] else ""
        how = f"resynced {d['recovered']}{lost}"
        when = " while this listener was down" if d.get("while_down") else ""
        return (f"GAP     {cam}: missing msg_seq {d['first_msg_seq']}..{d['last_msg_seq']} "
                f"({d['missing']}){when}; {how}")
    if ev.kind == "restart":
        if d.get("while_down"):
            return (f"RESTART {cam}: boot {d['old_boot_id'][:8]} -> {d['new_boot_id'][:8]} while this listener "
                    f"was down (what the old boot sent from msg_seq {d['old_resume_from']} on cannot be fetched: "
                    "its history ended with it)")
        return (f"RESTART {cam}: boot {d['old_boot_id'][:8]} -> {d['new_boot_id'][:8]} "
                "(publisher restarted; sequence numbers start again)")
    if ev.kind == "join":
        n = d["not_requested"]
        return (f"JOIN    {cam}: boot {d['boot_id'][:8]} had sent msg_seq 0..{n - 1} ({n}) before this "
                "listener started; not requested (give --state FILE or --resume-from N to fetch what a run "
                "missed)")
    if ev.kind == "resume":
        head = f"RESUME  {cam}: boot {d['boot_id'][:8]} from msg_seq {d['resume_from']}"
        if d["error"]:
            return f"{head}: {d['error']}"
        if not d["missed"]:
            return f"{head}: nothing missed"
        return (f"{head}: the station sent up to {d['station_last_msg_seq']} meanwhile, "
                f"{d['missed']} missed while this listener was down")
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


def resume_json(points: dict[tuple[str, str], ResumePoint]) -> list[dict]:
    """Resume points as JSON (the summary's "resume")."""
    return [{"line_id": k[0], "camera_id": k[1], "boot_id": p.boot_id, "next_msg_seq": p.next_msg_seq}
            for k, p in sorted(points.items())]


def format_summary(stats: ListenerStats, points: dict[tuple[str, str], ResumePoint] | None = None) -> str:
    s = stats
    text = (
        f"summary: received {s.received} live + {s.resynced} resynced (ok {s.ok}, ng {s.ng}, unknown {s.unknown}); "
        f"gaps {s.gaps} (missing {s.missing}, unrecovered {s.unrecovered}); restarts {s.restarts}; "
        f"invalid {s.invalid}; duplicates {s.duplicates}; frames skipped by the station {s.frames_skipped}; "
        f"heartbeats {s.heartbeats}; missed while down {s.missed_while_down}; "
        f"sent before start, not requested {s.not_requested}"
    )
    if points:
        where = ", ".join(f"{k[0]}/{k[1]} msg_seq {p.next_msg_seq}"
                          + (f" of boot {p.boot_id[:8]}" if p.boot_id else "")
                          for k, p in sorted(points.items()))
        text += f"; next: {where}"
    return text


def run_until(listener: VerdictListener, count: int | None, timeout_s: float | None, on_event,
              after_poll=None) -> bool:
    """Feed events to on_event until ``count`` verdicts (live + resynced) or ``timeout_s``; True if count
    reached.
    ``after_poll()`` runs after each wait, once its events were handed on (e.g. StateFile.maybe_save)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if count is not None and listener.stats.received + listener.stats.resynced >= count:
            return True
        wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if wait <= 0:
            return count is None
        for ev in listener.poll(wait):
            on_event(ev)
        if after_poll is not None:
            after_poll()

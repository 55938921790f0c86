"""Shared helpers for the protocol tests: settings on ephemeral loopback ports, verdict factory, waits."""

from __future__ import annotations

import time

import numpy as np

from edge_inspect.protocol.listener import VerdictListener
from edge_inspect.protocol.settings import ControlSettings, PublisherSettings, SecuritySettings
from edge_inspect.verdict import Region, Verdict

LOOPBACK = "tcp://127.0.0.1:*"
FIGURES: list[str] = []  # measured figures, printed in pytest's terminal summary by conftest.py


def report(line: str) -> None:
    FIGURES.append(line)
    print(f"\n{line}")


def pub_settings(**kw) -> PublisherSettings:
    return PublisherSettings(**{"bind": LOOPBACK, "heartbeat_s": 0.05, "linger_ms": 0, **kw})


def ctl_settings(**kw) -> ControlSettings:
    return ControlSettings(**{"bind": LOOPBACK, **kw})


def no_curve() -> SecuritySettings:
    return SecuritySettings(curve="off")


def make_verdict(seq: int, label: str = "ok", camera_id: str = "cam0", heatmap: bool = False, **kw) -> Verdict:
    now = time.time()
    score = None if label == "unknown" else (0.1 if label == "ok" else 6.0)
    return Verdict(
        camera_id=camera_id,
        seq=seq,
        label=label,
        score=score,
        normalised_score=None if score is None else score / 0.5,
        threshold=0.5,
        t_capture_wall=now - 0.012,
        t_decision_wall=now,
        part_id=kw.pop("part_id", f"P{seq}"),
        regions=[Region(10, 12, 5, 6, 30, 0.93)] if label == "ng" else [],
        latency_ms={"capture_wait": 1.5, "preprocess": 2.25, "infer": 8.0, "decide": 0.5},
        error="backend failed" if label == "unknown" else None,
        model_id="rstpm-demo",
        model_version="0.1.0",
        heatmap=np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64) if heatmap else None,
        **kw,
    )


def wait_connected(listener: VerdictListener, timeout_s: float = 5.0) -> None:
    """Wait for the first heartbeat: the subscription is live (PUB drops everything before that)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(ev.kind == "heartbeat" for ev in listener.poll(0.05)):
            return
    raise AssertionError("no heartbeat: the subscriber never connected")


def collect(listener: VerdictListener, n_verdicts: int, timeout_s: float = 5.0) -> list:
    """Events until n_verdicts verdict events (live or resynced) or the timeout."""
    events = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(e.kind == "verdict" for e in events) < n_verdicts:
        events += listener.poll(0.05)
    return events

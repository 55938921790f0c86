"""Soak: a real ``edge-inspect run`` process in lossless mode, a subscriber on loopback, nothing lost.

    python benchmarks/soak.py --frames 10000                 # the soak of docs/reliability.md
    python benchmarks/soak.py --frames 2000 --fps 100 --json soak.json

The station runs as its own process (synthetic camera, the tiny test model on ONNX Runtime, verdicts
over ZeroMQ PUB, control channel on). This script subscribes before the station binds, checks that
every frame has exactly one verdict on the wire with contiguous frame and message sequence numbers,
samples the station's resident memory (VmRSS from /proc/<pid>/status) and reports latency p50/p99 per
window of frames. Frames the subscription missed while connecting (ZeroMQ's "slow joiner") are
fetched through the control channel's ``last`` and reported as ``resynced`` (expected: 0).

The helpers (``Station``, ``WireCollector``, ``rss_kb``, ``free_port``) are reused by
tests/reliability. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EDGE_INSPECT = [sys.executable, "-m", "edge_inspect"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Received:
    """One verdict as the subscriber saw it. ``e2e_ms``: capture (station wall clock) → arrival here."""

    seq: int
    msg_seq: int
    state: str
    total_ms: float
    e2e_ms: float
    threshold: float
    error: str | None
    resynced: bool = False


class WireCollector(threading.Thread):
    """A SUB socket in its own thread collecting every verdict and heartbeat from ``endpoint``.

    Connect it BEFORE the station binds (ZeroMQ retries every 10 ms), so the subscription is usually
    live before the first verdict. ``delay_s``: sleep after each message (a slow subscriber);
    ``rcvhwm``: receive high-water mark (small + slow = drops at the publisher, seen as msg_seq gaps).
    """

    def __init__(self, endpoint: str, delay_s: float = 0.0, rcvhwm: int = 1_000_000):
        super().__init__(name="wire-collector", daemon=True)
        import zmq

        self.verdicts: list[Received] = []
        self.heartbeats: list[dict] = []
        self.invalid: list[str] = []
        self.delay_s = delay_s
        self._stop_evt = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt_string(zmq.SUBSCRIBE, "verdict.")
        self._sock.setsockopt_string(zmq.SUBSCRIBE, "heartbeat.")
        self._sock.connect(endpoint)

    def run(self) -> None:
        from edge_inspect.protocol.messages import HeartbeatMsg, VerdictMsg, parse_time

        try:
            while not self._stop_evt.is_set():
                if not self._sock.poll(50):
                    continue
                frames = self._sock.recv_multipart()
                now = time.time()
                try:
                    if frames[0].startswith(b"heartbeat."):
                        self.heartbeats.append(HeartbeatMsg.from_frames(frames).body())
                        continue
                    m = VerdictMsg.from_frames(frames)
                except Exception as exc:  # noqa: BLE001 - counted: the test asserts there are none
                    self.invalid.append(str(exc))
                    continue
                self.verdicts.append(Received(
                    m.seq, m.msg_seq, m.result_state, m.latency_ms.get("total", float("nan")),
                    (now - parse_time(m.capture_time)) * 1000.0, m.threshold, m.error))
                if self.delay_s:
                    time.sleep(self.delay_s)
        finally:
            self._sock.close(linger=0)
            self._ctx.term()

    def stop(self, grace_s: float = 0.5) -> None:
        """Keep receiving for ``grace_s`` (what is still in flight), then close."""
        time.sleep(grace_s)
        self._stop_evt.set()
        self.join(5)

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.verdicts) >= n:
                return True
            time.sleep(0.02)
        return False


@dataclass
class Station:
    """``edge-inspect run`` as a subprocess on loopback ports, with a TOML config written for it.

    ``camera``: a camera URI; ``args``: more CLI flags; ``config``: extra TOML text (sections);
    ``pipe_stdout``: False sends stdout to /dev/null; ``stdout_path``: write stdout there instead.
    """

    model_dir: Path
    camera: str
    workdir: Path
    args: list[str] = field(default_factory=list)
    config: str = ""
    env: dict | None = None
    stdout_path: str | None = None
    pub_port: int = field(default_factory=free_port)
    ctl_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    out: str = ""
    err: str = ""

    @property
    def pub(self) -> str:
        return f"tcp://127.0.0.1:{self.pub_port}"

    @property
    def ctl(self) -> str:
        return f"tcp://127.0.0.1:{self.ctl_port}"

    def start(self) -> Station:
        cfg = Path(self.workdir) / f"station-{self.pub_port}.toml"
        cfg.write_text(textwrap.dedent(f"""
            log_level = "INFO"
            [publisher]
            bind = "{self.pub}"
            heartbeat_s = 0.2
            [control]
            bind = "{self.ctl}"
            [security]
            curve = "off"
            [camera]
            read_timeout_s = 0.5
            reconnect_initial_s = 0.05
            reconnect_max_s = 0.5
        """) + textwrap.dedent(self.config))
        env = {**os.environ, "EDGE_INSPECT_NO_DEFAULT_CONFIG": "1", "PYTHONPATH": str(REPO), **(self.env or {})}
        stdout = open(self.stdout_path, "w") if self.stdout_path else subprocess.PIPE  # closed once Popen has it
        self.proc = subprocess.Popen(
            [*EDGE_INSPECT, "run", "--config", str(cfg), "--camera", self.camera, "--model", str(self.model_dir),
             *self.args], cwd=REPO, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
        if self.stdout_path:
            stdout.close()
        return self

    def control(self, cmd: str, timeout_s: float = 5.0, **kw):
        """The reply (ControlReply) to one control request."""
        from edge_inspect.protocol.control import ControlClient

        with ControlClient(self.ctl) as c:
            return c.request_reply(cmd, timeout_s=timeout_s, **kw)

    def wait_running(self, timeout_s: float = 30.0) -> dict:
        from edge_inspect.errors import ProtocolError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.finish(0)
                raise AssertionError(f"station exited early ({self.proc.returncode}): {self.err[-2000:]}")
            try:
                r = self.control("status", timeout_s=0.5)
                if r.ok and r.result.get("state") == "running":
                    return r.result
            except ProtocolError:  # no reply: not up yet
                time.sleep(0.05)
        raise AssertionError("station not running within the timeout")

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.finish(timeout_s)

    def finish(self, timeout_s: float = 60.0) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            self.err = (err or "") + "\n[killed after timeout]"
            self.out = out or ""
            raise AssertionError(f"station hung: {self.err[-3000:]}") from None
        self.out, self.err = out or "", err or ""
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def summary_counts(stdout: str) -> dict[str, int]:
    """Parse ``parts judged`` / ``frames taken`` / drops from the run summary."""
    import re

    out = {}
    m = re.search(r"parts judged: (\d+)\s+\(ok (\d+), ng (\d+), unknown (\d+)\)", stdout)
    if m:
        out.update(judged=int(m[1]), ok=int(m[2]), ng=int(m[3]), unknown=int(m[4]))
    m = re.search(r"frames taken: (\d+); dropped: (\d+) \(queue, free-run\), (\d+) \(camera sequence gaps\)", stdout)
    if m:
        out.update(taken=int(m[1]), dropped_queue=int(m[2]), dropped_gap=int(m[3]))
    return out


def resync_missing_start(station: Station, wire: WireCollector) -> int:
    """Fetch verdicts the subscription missed before it was live (seq below the first received)."""
    if not wire.verdicts or wire.verdicts[0].seq == 0:
        return 0
    first = wire.verdicts[0].seq
    reply = station.control("last", since_seq=-1, n=first)
    got = [b for b in reply.result["verdicts"] if b["seq"] < first]
    wire.verdicts[:0] = [Received(b["seq"], b["msg_seq"], b["result_state"], b["latency_ms"].get("total", float("nan")),
                                  float("nan"), b["threshold"], b["error"], resynced=True) for b in got]
    return len(got)


def soak(frames: int, model_dir: Path | None = None, fps: float = 0.0, size: int = 256, window: int = 1000,
         mode: str = "lossless", workdir: Path | None = None, timeout_s: float = 3600.0) -> dict:
    """Run the soak; return its figures (see the module docstring)."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="soak-")
        workdir = Path(tmp.name)
    if model_dir is None:
        from tests.fixtures.tiny_model import make_tiny_model

        model_dir = make_tiny_model(Path(workdir) / "tiny_model")
    station = Station(model_dir, f"synthetic://?fps={fps:g}&size={size}&seed=1", Path(workdir),
                      args=["--mode", mode, "--max-frames", str(frames)])
    wire = WireCollector(station.pub)
    wire.start()
    t0 = time.monotonic()
    station.start()
    samples: list[tuple[float, int, int]] = []  # (t, verdicts received, rss KiB)
    resynced = 0
    try:
        while station.proc.poll() is None and time.monotonic() - t0 < timeout_s:
            rss = rss_kb(station.proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - t0, len(wire.verdicts), rss))
            if not resynced and wire.verdicts and wire.verdicts[0].seq != 0:
                resynced = resync_missing_start(station, wire)
            time.sleep(0.25)
        rc = station.finish(60)
    finally:
        station.kill()
        wire.stop()
    wall = time.monotonic() - t0
    counts = summary_counts(station.out)
    seqs = [v.seq for v in wire.verdicts]
    live = [v for v in wire.verdicts if not v.resynced]
    msg_seqs = [v.msg_seq for v in live]
    windows = []
    for i in range(0, len(wire.verdicts), window):
        chunk = wire.verdicts[i:i + window]
        tot = np.array([v.total_ms for v in chunk if np.isfinite(v.total_ms)])
        e2e = np.array([v.e2e_ms for v in chunk if np.isfinite(v.e2e_ms)])
        if tot.size:
            windows.append({"frames": f"{chunk[0].seq}-{chunk[-1].seq}", "p50_ms": round(float(np.median(tot)), 2),
                            "p99_ms": round(float(np.percentile(tot, 99)), 2),
                            "e2e_p99_ms": round(float(np.percentile(e2e, 99)), 2) if e2e.size else None})
    warm = [s for s in samples if s[1] >= max(1, frames // 20)]
    p99s = [w["p99_ms"] for w in windows]
    return {
        "command": " ".join(station.proc.args[2:]) if station.proc else "",
        "frames_requested": frames,
        "exit_code": rc,
        "wall_s": round(wall, 1),
        "summary": counts,
        "verdicts_on_wire": len(wire.verdicts),
        "resynced_at_start": resynced,
        "unique_seqs": len(set(seqs)),
        "duplicates": len(seqs) - len(set(seqs)),
        "missing_seqs": sorted(set(range(frames)) - set(seqs))[:20],
        "seq_contiguous": seqs == list(range(len(seqs))),
        "msg_seq_contiguous": msg_seqs == list(range(msg_seqs[0], msg_seqs[0] + len(msg_seqs))) if msg_seqs else False,
        "states": {s: sum(v.state == s for v in wire.verdicts) for s in ("ok", "ng", "unknown")},
        "invalid_messages": len(wire.invalid),
        "heartbeats": len(wire.heartbeats),
        "rss_kib": {"first": next((s[2] for s in samples if s[1] > 0), None), "start": warm[0][2] if warm else None,
                    "end": samples[-1][2] if samples else None, "max": max(s[2] for s in samples) if samples else None},
        "latency_windows": windows,
        "p99_spread": round(max(p99s) / max(min(p99s), 1e-9), 2) if p99s else None,
        "stderr_tail": station.err[-1500:],
        "has_traceback": "Traceback" in station.err,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--fps", type=float, default=0.0, help="synthetic camera rate (0: as fast as the station takes)")
    ap.add_argument("--size", type=int, default=256, help="synthetic image side in pixels")
    ap.add_argument("--window", type=int, default=1000, help="frames per latency window")
    ap.add_argument("--model", type=Path, help="model folder (default: the tiny test model, generated)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    r = soak(args.frames, args.model, args.fps, args.size, args.window)
    print(f"soak: {r['frames_requested']} frames requested, exit {r['exit_code']}, wall {r['wall_s']} s")
    print(f"  station summary: {r['summary']}")
    print(f"  on the wire: {r['verdicts_on_wire']} verdicts ({r['unique_seqs']} unique seqs, "
          f"{r['duplicates']} duplicates, missing {r['missing_seqs']}), resynced at start {r['resynced_at_start']}, "
          f"seq contiguous {r['seq_contiguous']}, msg_seq contiguous {r['msg_seq_contiguous']}, "
          f"invalid {r['invalid_messages']}, heartbeats {r['heartbeats']}, states {r['states']}")
    rss = r["rss_kib"]
    print(f"  RSS KiB: first sample {rss['first']}, after warm-up {rss['start']}, end {rss['end']}, max {rss['max']}")
    print("  latency per window (capture→decision ms; e2e = capture→subscriber):")
    for w in r["latency_windows"]:
        print(f"    frames {w['frames']:>12}: p50 {w['p50_ms']:7.2f}  p99 {w['p99_ms']:7.2f}  "
              f"e2e p99 {w['e2e_p99_ms']}")
    print(f"  p99 max/min over windows: {r['p99_spread']}; traceback in stderr: {r['has_traceback']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    ok = (r["exit_code"] == 0 and r["unique_seqs"] == args.frames and r["duplicates"] == 0 and r["seq_contiguous"]
          and r["summary"].get("judged") == args.frames and not r["has_traceback"])
    print("soak PASSED: every frame exactly one verdict" if ok else "soak FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

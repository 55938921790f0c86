"""Several cameras in one station (issue 20): throughput, p99 latency per camera, resident memory, lossless.

    python benchmarks/multi_camera.py --model MODEL_DIR [--cameras 1 2 4] [--rounds 2] [--frames 100]
    python benchmarks/multi_camera.py --tiny 256 ...          # the generated tiny model (needs onnx)
    python benchmarks/multi_camera.py --model MODEL_DIR --lossless-frames 10000   # the 0-lost check only
    python benchmarks/multi_camera.py --model MODEL_DIR --batch-cost               # ms per image at batch 1/2/4

Each configuration runs in its own fresh process (so resident memory is that configuration's), and the
configurations are interleaved round by round (1, 2, 4, 1, 2, 4, ...) so that a busy, shared CPU slows
them alike. Per run:
  throughput  N synthetic cameras, lossless, as fast as they go (fps=0), ``--frames`` each: verdicts/s of
              the whole station, and the mean batch size the hub reached;
  latency     N synthetic cameras free-running at ``--latency-fps`` each for ``--latency-s``: p99 of the
              capture→verdict latency of each camera (the issue's "p99 per camera");
  memory      the largest resident set seen during the throughput phase (sampled every 20 ms; the model
              is loaded once per process).
Targets (issue 20): throughput ≥ 1.3× one camera with 2, ≥ 1.6× with 4; p99 ≤ 2× one camera's; RSS with 4
≤ 1.3× one camera's; 0 frames lost in lossless mode over 10,000 frames (``--lossless-frames``).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _settings(model_dir: str, n: int, uri: str, mode: str, batch_wait_ms: float, threads: int | None,
              max_batch: int = 8):
    from edge_inspect.settings import Settings

    return Settings(
        model={"dir": model_dir, "backend": "onnxruntime", "intra_op_threads": threads},
        cameras=[{"id": f"cam{i}", "uri": f"{uri}&seed={i}", "mode": mode} for i in range(n)],
        pipeline={"warmup_runs": 2, "stats_interval_s": 3600, "infer_timeout_s": 60, "drop_warn_share": None},
        publisher={"bind": "tcp://127.0.0.1:*", "heartbeat_s": 1.0, "queue_size": 100000},
        control={"enabled": False},
        station={"batch_wait_ms": batch_wait_ms, "max_batch": max_batch or None},  # 0: auto
    )


def _run_station(settings) -> tuple[dict, float]:
    from edge_inspect.pipeline.station import build_station, first_camera_id
    from edge_inspect.protocol.publisher import VerdictPublisher

    pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
    station = build_station(settings, pub)
    station.start()
    t0 = time.monotonic()
    return station, t0


class RssSampler:
    """Largest resident set (MiB) seen while running, sampled from /proc/self/statm every 20 ms."""

    def __init__(self):
        import os
        import threading

        self.peak_mib = 0.0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * self._page / 2**20
            self.peak_mib = max(self.peak_mib, rss)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def worker(args) -> dict:
    """One configuration in this process: the throughput phase, then the latency phase; one JSON line."""
    n = args.worker
    size = args.image_size
    # throughput: every frame judged, cameras as fast as they go
    s = _settings(args.model, n, f"synthetic://?fps=0&size={size}&count={args.frames}", "lossless",
                  args.batch_wait_ms, args.threads, args.max_batch[0])
    sampler = RssSampler()
    station, t0 = _run_station(s)
    station.wait()
    wall = time.monotonic() - t0
    rss_running = sampler.stop()
    summ = station.summary()
    judged = summ["counters"]["verdicts_out"]
    lost = summ["counters"]["frames_in"] - judged + summ["counters"]["dropped_gap"]
    hub = summ["hub"][0]
    out = {"cameras": n, "frames": judged, "lost_lossless": lost, "throughput_fps": judged / wall,
           "mean_batch": hub["mean_batch"], "rss_mib": rss_running}
    # latency: free-running cameras at a moderate rate
    if args.latency_s > 0:
        s = _settings(args.model, n, f"synthetic://?fps={args.latency_fps}&size={size}", "free-run",
                      args.batch_wait_ms, args.threads, args.max_batch[0])
        station, _ = _run_station(s)
        time.sleep(args.latency_s)
        station.stop()
        cams = station.summary()["cameras"]
        out["p99_ms"] = {cid: c["latency_ms"].get("total", {}).get("p99") for cid, c in cams.items()}
        out["latency_verdicts"] = sum(c["counters"]["verdicts_out"] for c in cams.values())
    out["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # both phases
    return out


def lossless(args) -> dict:
    """4 cameras (``--cameras`` last value), lossless, ``--lossless-frames`` frames in all: frames lost."""
    n = args.cameras[-1]
    per = -(-args.lossless_frames // n)
    s = _settings(args.model, n, f"synthetic://?fps=0&size={args.image_size}&count={per}", "lossless",
                  args.batch_wait_ms, args.threads, args.max_batch[0])
    station, t0 = _run_station(s)
    station.wait()
    summ = station.summary()
    c = summ["counters"]
    per_cam = {cid: cs["counters"]["verdicts_out"] for cid, cs in summ["cameras"].items()}
    return {"cameras": n, "frames_asked": per * n, "frames_in": c["frames_in"], "verdicts_out": c["verdicts_out"],
            "lost": c["frames_in"] - c["verdicts_out"] + c["dropped_gap"] + (per * n - c["frames_in"]),
            "dropped_queue": c["dropped_queue"], "publish_errors": c["publish_errors"], "per_camera": per_cam,
            "seconds": round(time.monotonic() - t0, 1)}


def batch_cost(args) -> dict:
    """ms per image of the real backend at batch 1, 2 and 4, interleaved, median of ``--rounds`` × 3 calls."""
    import numpy as np

    from edge_inspect.backends.select import open_backend
    from edge_inspect.manifest import load_manifest

    m = load_manifest(args.model)
    be = open_backend(args.model, "onnxruntime", manifest=m, threads=args.threads)
    be.load()
    spec = m.input
    per: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(max(args.rounds, 3)):
        for b in per:
            x = np.random.default_rng(b).random((b, 3, spec.height, spec.width), dtype=np.float32)
            be.infer({spec.name: x})
            t0 = time.perf_counter()
            for _ in range(3):
                be.infer({spec.name: x})
            per[b].append((time.perf_counter() - t0) / 3 / b * 1000)
    be.close()
    return {f"batch{b}_ms_per_image": round(statistics.median(v), 2) for b, v in per.items()}


def _spawn(args, n: int, max_batch: int) -> dict:
    cmd = [sys.executable, __file__, "--model", args.model, "--worker", str(n), "--frames", str(args.frames),
           "--latency-s", str(args.latency_s), "--latency-fps", str(args.latency_fps),
           "--batch-wait-ms", str(args.batch_wait_ms), "--image-size", str(args.image_size),
           "--max-batch", str(max_batch)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"worker for {n} camera(s) failed:\n{r.stderr[-3000:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "max_batch": max_batch}


def report(all_runs: list[dict], cams: list[int]) -> str:
    out = []
    for mb in sorted({r["max_batch"] for r in all_runs}):
        out.append(f"max_batch {mb or 'auto'}:\n" + _table([r for r in all_runs if r["max_batch"] == mb], cams))
    return "\n".join(out)


def _table(runs: list[dict], cams: list[int]) -> str:
    def med(n, key):
        vals = [r[key] for r in runs if r["cameras"] == n and r.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    def p99(n):
        vals = [max(v for v in r["p99_ms"].values() if v is not None) for r in runs
                if r["cameras"] == n and r.get("p99_ms")]
        return statistics.median(vals) if vals else float("nan")

    base_fps, base_p99, base_rss = med(cams[0], "throughput_fps"), p99(cams[0]), med(cams[0], "rss_mib")
    lines = [f"{'cameras':>7} {'frames/s':>9} {'× one':>6} {'mean batch':>10} {'worst p99 ms':>12} {'× one':>6} "
             f"{'RSS MiB':>8} {'× one':>6}"]
    for n in cams:
        fps, lat, rss = med(n, "throughput_fps"), p99(n), med(n, "rss_mib")
        lines.append(f"{n:>7} {fps:>9.2f} {fps / base_fps:>6.2f} {med(n, 'mean_batch'):>10.2f} {lat:>12.1f} "
                     f"{lat / base_p99:>6.2f} {rss:>8.0f} {rss / base_rss:>6.2f}")
    lines.append("(medians over the rounds; worst p99 = the slowest camera's p99 capture→verdict latency; "
                 "RSS = largest resident set during the throughput phase)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="exported model folder")
    src.add_argument("--tiny", type=int, metavar="SIZE", help="generate the tiny test model at SIZE x SIZE")
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every configuration")
    ap.add_argument("--frames", type=int, default=100, help="frames per camera in the throughput phase")
    ap.add_argument("--latency-s", type=float, default=8.0, help="seconds of the latency phase (0: skip it)")
    ap.add_argument("--latency-fps", type=float, default=2.0, help="frame rate of each camera in the latency phase")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[0],
                    help="[station] max_batch; several values are interleaved too (0: auto, 1: shared model, "
                    "no batching)")
    ap.add_argument("--image-size", type=int, default=256, help="synthetic camera image size (square)")
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's)")
    ap.add_argument("--lossless-frames", type=int, metavar="N",
                    help="only the lossless check: N frames over the last --cameras count (issue: 10000)")
    ap.add_argument("--batch-cost", action="store_true", help="only: ms per image at batch 1, 2, 4")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON here")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from tests.fixtures.tiny_model import make_tiny_model

            args.model = str(make_tiny_model(Path(tmp) / "tiny", size=args.tiny))
        if args.worker:
            print(json.dumps(worker(args)))
            return 0
        if args.batch_cost:
            print(json.dumps(batch_cost(args)))
            return 0
        if args.lossless_frames:
            res = lossless(args)
            print(json.dumps(res))
            return 0 if res["lost"] == 0 else 1
        runs = []
        for r in range(args.rounds):
            for mb in args.max_batch:
                for n in args.cameras:
                    res = _spawn(args, n, mb)
                    print(f"round {r + 1} max_batch {mb} {n} camera(s): {json.dumps(res)}", flush=True)
                    runs.append(res)
        print(report(runs, args.cameras))
        if args.json:
            Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

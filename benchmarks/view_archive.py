"""Does the live view or the defect archive slow the line? And does the archive hold its memory and its cap?
(issue 16 targets)

1. Throughput: the pipeline (lossless, synthetic camera as fast as it renders, the given model on ONNX Runtime)
   with nothing attached, against the same with the live view served AND open in headless Chromium (Selenium)
   AND the archive on (every NG part, ``--ok-sample`` of OK parts). Rounds alternate (off, on, off, on, ...) so
   a shared CPU's load falls on both alike; the figure is the ratio of the medians. Target: >= 97 %.
   Also the process's CPU time per frame in both (and each observer thread's): on a busy shared CPU, more
   runnable threads get a bigger share, which can make "on" look faster; ``cpu_bound_ratio_estimate`` =
   CPU/frame off ÷ CPU/frame on is what an idle, CPU-bound station would see.
2. Archive: ``--parts`` NG parts (default 10,000; 128x128 noise images, incompressible PNGs) written through
   ``ArchiveStore`` as the writer thread does, with a ``--cap-mb`` size cap: resident memory (VmRSS) after the
   first 10 % and at the end (target: no growth), and the archive folder's size against the cap (target:
   within 1 %).

    python benchmarks/view_archive.py --model MODEL_DIR [--frames 300] [--rounds 3] [--parts 10000] [--cap-mb 50]
    python benchmarks/view_archive.py --model MODEL_DIR --skip-archive     # throughput only
    python benchmarks/view_archive.py --model MODEL_DIR --skip-throughput  # archive only (needs the tiny model)

Without Chromium + chromedriver + selenium the view is served but no browser opens it (said in the output).
Prints one JSON object. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.archive.settings import ArchiveSettings
from edge_inspect.archive.store import ArchiveStore, ArchiveWriter
from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.camera.uri import open_source
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.bench import NullPublisher, rss_mib
from edge_inspect.pipeline.runner import Pipeline
from edge_inspect.settings import Settings
from edge_inspect.view.live import ViewObserver
from edge_inspect.view.server import ViewServer


def rss_kib() -> int:
    return int(rss_mib()["rss_mib"] * 1024)


def browser():
    """A headless Chromium driven by Selenium, or (None, why)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        return None, "no chromium/chromedriver"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "no selenium"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts), "headless chromium"


def one_run(model: Path, frames: int, size: int, with_outputs: bool, tmp: Path, ok_sample: float, drv,
            defect_rate: float) -> dict:
    settings = Settings(camera={"uri": f"synthetic://?fps=0&size={size}&defect_rate={defect_rate}&count={frames}"},
                        pipeline={"mode": "lossless", "warmup_runs": 2},
                        view={"enabled": True, "bind": "127.0.0.1:0", "fps": 5},
                        archive={"enabled": True, "dir": tmp / f"arch-{time.monotonic_ns()}", "ok_sample": ok_sample})
    observers, server = [], None
    if with_outputs:
        view = ViewObserver(settings.view)
        server = ViewServer(settings.view, view.live)
        observers = [view, ArchiveWriter(settings.archive)]
    p = Pipeline(open_source(settings.camera), OnnxRuntimeBackend(model, load_manifest(model)), NullPublisher(),
                 settings, observers=observers)
    for o in observers:
        o.start()
    if server is not None:
        view.attach_status(p.status)
        server.start()
        if drv is not None:
            drv.get(server.url)
    cpu0 = _cpu_s()
    p.start()
    p.wait(3600)
    cpu = _cpu_s() - cpu0
    s = p.summary()
    extra = {}
    if with_outputs:
        if drv is not None:
            extra["browser_frames_seen"] = drv.execute_script("return Number(document.body.dataset.version || 0)")
            drv.get("about:blank")
        for o in observers:
            o.close(timeout=120)
        server.close()
        extra["observers"] = {o.name: o.stats() for o in observers}
    n = s["counters"]["verdicts_out"]
    if with_outputs:
        extra["observer_cpu_ms_per_frame"] = {o.name: round(1000 * o.stats()["cpu_s"] / n, 2) for o in observers}
    return {"fps": s["fps"], "frames": n, "ng": s["counters"]["ng"],
            "process_cpu_ms_per_frame": round(1000 * cpu / n, 2), **extra}


def _cpu_s() -> float:
    """This process's user + system CPU seconds (all threads; the browser is another process)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def throughput(args, tmp: Path) -> dict:
    drv, why = browser()
    runs = {"off": [], "on": []}
    details = []
    try:
        one_run(args.model, 20, args.size, True, tmp, args.ok_sample, drv, args.defect_rate)  # warm up, the browser
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                r = one_run(args.model, args.frames, args.size, mode == "on", tmp, args.ok_sample, drv,
                            args.defect_rate)
                runs[mode].append(r["fps"])
                details.append({"mode": mode, **r})
    finally:
        if drv is not None:
            drv.quit()
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    cpu_off = statistics.median(d["process_cpu_ms_per_frame"] for d in details if d["mode"] == "off")
    cpu_on = statistics.median(d["process_cpu_ms_per_frame"] for d in details if d["mode"] == "on")
    return {"process_cpu_ms_per_frame_off": cpu_off, "process_cpu_ms_per_frame_on": cpu_on,
            # On a CPU-bound station (inference uses every core) throughput scales with CPU per frame:
            "cpu_bound_ratio_estimate": round(cpu_off / cpu_on, 4) if cpu_on else None,
            "browser": why if drv is not None else f"none ({why})", "fps_off": runs["off"], "fps_on": runs["on"],
            "median_fps_off": round(off, 2), "median_fps_on": round(on, 2),
            "ratio_on_off": round(on / off, 4) if off else None, "target_ratio": 0.97, "runs": details}


def archive(args, tmp: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.archive.parts import part
    from tests.fixtures.tiny_model import make_tiny_model

    model = make_tiny_model(tmp / "tiny")
    cap = args.cap_mb
    store = ArchiveStore(ArchiveSettings(dir=tmp / "arch-bench", station="bench", max_size_mb=cap, max_age_days=None))
    first = max(1, args.parts // 10)
    rss, peak_folder = {}, 0
    t0 = time.perf_counter()
    for seq in range(args.parts):
        store.store(part(model, seq, "ng", 3.0, noise=True, size=128, t_wall=1.9e9 + seq))
        if seq + 1 == first:
            rss["after_first_10pct_kib"] = rss_kib()
        if (seq + 1) % first == 0:
            rss.setdefault("every_10pct_kib", []).append(rss_kib())
        if (seq + 1) % max(1, args.parts // 50) == 0:
            peak_folder = max(peak_folder, sum(f.stat().st_size for f in store.dir.rglob("*") if f.is_file()))
    elapsed = time.perf_counter() - t0
    rss["end_kib"] = rss_kib()
    folder = sum(f.stat().st_size for f in store.dir.rglob("*") if f.is_file())
    cap_bytes = cap * 1024 * 1024
    out = {"parts": args.parts, "seconds": round(elapsed, 1), "parts_per_s": round(args.parts / elapsed, 1),
           "rss": rss, "rss_growth_kib": rss["end_kib"] - rss["after_first_10pct_kib"],
           "cap_bytes": int(cap_bytes), "folder_bytes_end": folder, "folder_bytes_peak_sampled": peak_folder,
           "folder_over_cap_pct": round(100 * (max(folder, peak_folder) - cap_bytes) / cap_bytes, 3),
           "index_bytes": store.index.files_bytes(), "kept": store.index.count(), **store.stats()}
    store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="exported model folder (throughput)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="synthetic camera image size (px)")
    ap.add_argument("--ok-sample", type=float, default=0.05)
    ap.add_argument("--defect-rate", type=float, default=0.05,
                    help="synthetic camera's defect share (every NG part is archived; 0.3 is a harsh case)")
    ap.add_argument("--parts", type=int, default=10_000)
    ap.add_argument("--cap-mb", type=float, default=50.0)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-archive", action="store_true")
    args = ap.parse_args()
    out = {"cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="ei-bench-") as tmp:
        if not args.skip_throughput:
            if args.model is None:
                ap.error("--model is needed for the throughput part (or --skip-throughput)")
            out["throughput"] = throughput(args, Path(tmp))
        if not args.skip_archive:
            out["archive"] = archive(args, Path(tmp))
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

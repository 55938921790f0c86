"""Throughput benchmark: the backend alone vs the whole pipeline on the same frames.

model-only  backend.infer in a loop on frames preprocessed once (the ceiling).
pipeline    lossless mode, an in-memory source of the same raw frames, a null publisher; every
            frame goes through capture → preprocess → inference → decide → publish.
Targets (issue 5): pipeline ≥ 95 % of model-only throughput; p99 latency ≤ 1.5 × median.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..camera.base import EndOfStream, Frame, FrameSource
from ..manifest import load_manifest
from ..preprocess import preprocess
from ..settings import Settings


class MemorySource(FrameSource):
    """A finite source cycling over in-memory images: ``count`` frames with seq 0..count-1, then EndOfStream.

    images: (H, W, 3) uint8 BGR arrays. ``fps``: pace the frames like a camera (None: as fast as read).
    """

    def __init__(self, images: list[np.ndarray], count: int, camera_id: str = "bench", fps: float | None = None):
        self.images = images
        self.count = count
        self.camera_id = camera_id
        self.fps = fps
        self._seq = 0
        self._next_t = 0.0

    def open(self) -> None:
        self._next_t = time.monotonic()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._seq >= self.count:
            raise EndOfStream()
        if self.fps:
            delay = self._next_t - time.monotonic()
            if delay > timeout:
                time.sleep(timeout)
                return None
            if delay > 0:
                time.sleep(delay)
            self._next_t += 1.0 / self.fps
        seq, self._seq = self._seq, self._seq + 1
        return Frame(self.camera_id, seq, time.monotonic(), time.time(), self.images[seq % len(self.images)])

    def close(self) -> None:
        pass


class NullPublisher:
    """A VerdictSink (pipeline.interfaces) that sends nothing: counts verdicts and keeps each verdict's
    per-stage latency (ms). No heartbeats: nobody listens."""

    def __init__(self):
        self.verdicts = 0
        self.labels: dict[str, int] = {}
        self.latencies: list[dict[str, float]] = []
        self.closed = False

    def publish(self, verdict) -> None:
        self.verdicts += 1
        self.labels[verdict.label] = self.labels.get(verdict.label, 0) + 1
        self.latencies.append(verdict.latency_ms)

    def attach_status(self, provider) -> None:
        pass

    def beat_soon(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def bench_images(height: int, width: int, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` mid-grey (H, W, 3) uint8 images with mild noise and one bright square each (varied content)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        img = np.clip(124 + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
        s = max(2, min(height, width) // 8)
        y, x = (i * 7919) % (height - s), (i * 104729) % (width - s)
        img[y : y + s, x : x + s] = 255
        images.append(img)
    return images


def rss_mib() -> dict[str, float]:
    """Resident memory of this process from /proc/self/status: current (VmRSS) and peak (VmHWM), MiB."""
    out = {"rss_mib": float("nan"), "peak_rss_mib": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


@dataclass
class BenchResult:
    frames: int
    model_fps: float
    model_p50_ms: float
    model_p99_ms: float
    pipeline_fps: float
    pipeline_infer_p50_ms: float
    pipeline_infer_p99_ms: float
    pipeline_total_p50_ms: float
    pipeline_total_p99_ms: float
    rss_mib: float
    peak_rss_mib: float
    backend: str
    model_id: str
    input_hw: tuple[int, int]
    image_hw: tuple[int, int]
    counters: dict
    rounds: int = 1

    @property
    def ratio(self) -> float:
        return self.pipeline_fps / self.model_fps if self.model_fps else 0.0

    def table(self) -> str:
        def row(name, fps, p50, p99):
            tail = f"{p99 / p50:6.2f}" if p50 else "   n/a"
            return f"{name:<26}{fps:>10.1f}{p50:>11.2f}{p99:>11.2f}{tail:>11}"

        lines = [
            f"model {self.model_id} on {self.backend}; input {self.input_hw[0]}x{self.input_hw[1]}, "
            f"camera image {self.image_hw[0]}x{self.image_hw[1]}; {self.frames} frames in {self.rounds} rounds",
            f"{'':<26}{'frames/s':>10}{'p50 ms':>11}{'p99 ms':>11}{'p99/p50':>11}",
            row("model only (infer)", self.model_fps, self.model_p50_ms, self.model_p99_ms),
            row("pipeline: infer stage", self.pipeline_fps, self.pipeline_infer_p50_ms, self.pipeline_infer_p99_ms),
            row("pipeline: capture→verdict", self.pipeline_fps, self.pipeline_total_p50_ms,
                self.pipeline_total_p99_ms),
            f"pipeline / model-only throughput: {100 * self.ratio:.1f} % (target >= 95 %) "
            f"{'PASS' if self.ratio >= 0.95 else 'MISS'}",
            f"infer-stage p99 / p50: {self.pipeline_infer_p99_ms / max(self.pipeline_infer_p50_ms, 1e-9):.2f} "
            f"(target <= 1.5) "
            f"{'PASS' if self.pipeline_infer_p99_ms <= 1.5 * self.pipeline_infer_p50_ms else 'MISS'}",
            f"resident memory: {self.rss_mib:.0f} MiB now, {self.peak_rss_mib:.0f} MiB peak",
            f"counters: in={self.counters.get('frames_in')} verdicts={self.counters.get('verdicts_out')} "
            f"drops={self.counters.get('dropped_queue')} unknown={self.counters.get('unknown')}",
        ]
        return "\n".join(lines)


def _percentiles(samples_ms) -> tuple[float, float]:
    arr = np.asarray(samples_ms, np.float64)
    return (float(np.percentile(arr, 50)), float(np.percentile(arr, 99))) if arr.size else (0.0, 0.0)


def run_bench(model_dir: str | Path, frames: int = 200, backend: str = "auto", image_hw: tuple[int, int] | None = None,
              threads: int | None = None, queue_size: int = 4, warmup: int = 10, rounds: int = 3) -> BenchResult:
    """Measure model-only and pipeline throughput on the same images (see module doc).

    The ``frames`` are split into ``rounds`` that alternate model-only and pipeline measurements, so
    a change in machine load hits both alike. Throughput is frames over summed measured time.
    """
    from ..backends.select import open_backend
    from .runner import Pipeline

    manifest = load_manifest(model_dir)
    spec = manifest.input
    hw = image_hw or (spec.height, spec.width)
    images = bench_images(*hw)
    inputs = [preprocess(img, spec) for img in images]
    per_round = [frames // rounds + (1 if i < frames % rounds else 0) for i in range(rounds)]
    model_ms: list[float] = []
    model_wall = pipe_wall = 0.0
    infer_ms: list[float] = []
    total_ms: list[float] = []
    counters: dict[str, int] = {}

    with open_backend(model_dir, backend, manifest=manifest, threads=threads) as be:
        backend_name = be.name
        for i in range(warmup):
            be.infer({spec.name: inputs[i % len(inputs)]})
        for n in per_round:
            # model only: frames preprocessed once, infer in a loop (the backend's best case)
            t_start = time.perf_counter()
            for i in range(n):
                t0 = time.perf_counter()
                be.infer({spec.name: inputs[i % len(inputs)]})
                model_ms.append((time.perf_counter() - t0) * 1000.0)
            model_wall += time.perf_counter() - t_start

            # pipeline: lossless, in-memory source of the same raw frames, null publisher
            settings = Settings(
                model={"dir": str(model_dir), "backend": backend, "intra_op_threads": threads},
                pipeline={"mode": "lossless", "queue_size": queue_size, "warmup_runs": warmup,
                          "stats_interval_s": 3600},
                control={"enabled": False},
            )
            publisher = NullPublisher()
            pipeline = Pipeline(MemorySource(images, n), open_backend(model_dir, backend, manifest=manifest,
                                                                      threads=threads), publisher, settings)
            pipeline.start()  # loads and warms up the model before the clock starts
            pipeline.wait()
            summary = pipeline.summary()
            pipe_wall += summary["duration_s"]  # first frame taken → last verdict published
            infer_ms += [lat["infer"] for lat in publisher.latencies if "infer" in lat]
            total_ms += [lat["total"] for lat in publisher.latencies if "total" in lat]
            for k, v in summary["counters"].items():
                counters[k] = counters.get(k, 0) + v
    mem = rss_mib()
    m50, m99 = _percentiles(model_ms)
    i50, i99 = _percentiles(infer_ms)
    t50, t99 = _percentiles(total_ms)
    return BenchResult(
        frames=frames, model_fps=frames / model_wall, model_p50_ms=m50, model_p99_ms=m99,
        pipeline_fps=counters.get("verdicts_out", 0) / pipe_wall if pipe_wall else 0.0,
        pipeline_infer_p50_ms=i50, pipeline_infer_p99_ms=i99, pipeline_total_p50_ms=t50, pipeline_total_p99_ms=t99,
        rss_mib=mem["rss_mib"], peak_rss_mib=mem["peak_rss_mib"], backend=backend_name, model_id=manifest.model_id,
        input_hw=(spec.height, spec.width), image_hw=hw, counters=counters, rounds=rounds,
    )

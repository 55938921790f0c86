"""Two model folders side by side (e.g. float vs INT8): model-only latency and resident memory, one run.

Each model runs in its own child process, so each one's resident memory is its own (one process holding
both would report their sum). The parent sends both children the same frames and has them take turns,
round after round, so a change in machine load hits both alike. ONNX Runtime's idle threads sleep
(``allow_spinning=0``), so the waiting child does not take the cores from the running one.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BackendError, EdgeInspectError


@dataclass
class ModelFigures:
    label: str
    model_dir: str
    model_id: str
    precision: str
    backend: str
    mode: str  # "fused" / "chain" for ONNX Runtime, "" otherwise
    samples_ms: list[float] = field(default_factory=list)
    rss_mib: float = float("nan")  # after the runs, the child's VmRSS
    peak_rss_mib: float = float("nan")  # the child's VmHWM
    load_s: float = float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q)) if self.samples_ms else float("nan")


def short_precision(manifest) -> str:
    """"fp32", "int8-qdq", or "int8-qdq 4/5 graphs" for a model whose other graphs stay float."""
    kinds = [g.precision for g in manifest.graphs]
    low = [k for k in kinds if k != "fp32"]
    if not low or len(low) == len(kinds) and len(set(low)) == 1:
        return kinds[0]
    return f"{'+'.join(sorted(set(low)))} {len(low)}/{len(kinds)} graphs"


def _child(conn, model_dir: str, backend: str, threads: int | None) -> None:
    """Load the model, then serve ("run", frames) → ms per frame, ("stop",) → memory; errors as ("error", msg)."""
    import time

    from ..backends.select import open_backend
    from ..manifest import load_manifest
    from .bench import rss_mib

    try:
        t0 = time.perf_counter()
        manifest = load_manifest(model_dir)
        be = open_backend(model_dir, backend, manifest=manifest, threads=threads)
        be.load()
        conn.send(("ready", {"model_id": manifest.model_id, "precision": short_precision(manifest), "backend": be.name,
                             "mode": getattr(be, "mode", ""), "load_s": time.perf_counter() - t0}))
        name = manifest.input.name
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                be.close()
                conn.send(("memory", rss_mib()))
                return
            out = []
            for x in msg[1]:
                t = time.perf_counter()
                be.infer({name: x})
                out.append((time.perf_counter() - t) * 1000.0)
            conn.send(("ms", out))
    except EdgeInspectError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, not lost with the child
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _reply(conn, label: str, want: str):
    kind, payload = conn.recv()
    if kind == "error":
        raise BackendError(f"{label}: {payload}")
    if kind != want:
        raise BackendError(f"{label}: unexpected reply {kind!r}")
    return payload


def compare_models(models: dict[str, str | Path], frames: list[np.ndarray], rounds: int = 5, warmup: int = 10,
                   backend: str = "onnxruntime", threads: int | None = None) -> list[ModelFigures]:
    """Time ``infer`` on ``frames`` ((1,3,H,W) float32 each) for every model in ``models`` {label: folder}.

    Every round, each model in turn runs all ``frames``; ``warmup`` frames first (not timed). Returns one
    ModelFigures per model, in the order given.
    """
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of the parent's memory counts
    children, figures = [], []
    try:
        for label, folder in models.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(child, str(folder), backend, threads), daemon=True)
            proc.start()
            children.append((label, parent, proc))
        for label, conn, _ in children:
            info = _reply(conn, label, "ready")
            figures.append(ModelFigures(label=label, model_dir=str(models[label]), **info))
        for label, conn, _ in children:
            conn.send(("run", [frames[i % len(frames)] for i in range(warmup)]))
            _reply(conn, label, "ms")
        for _ in range(rounds):
            for (label, conn, _), fig in zip(children, figures, strict=True):
                conn.send(("run", frames))
                fig.samples_ms += _reply(conn, label, "ms")
        for (label, conn, _), fig in zip(children, figures, strict=True):
            conn.send(("stop",))
            mem = _reply(conn, label, "memory")
            fig.rss_mib, fig.peak_rss_mib = mem["rss_mib"], mem["peak_rss_mib"]
    finally:
        for _, conn, proc in children:
            conn.close()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    return figures


def table(figures: list[ModelFigures], image_hw: tuple[int, int]) -> str:
    """The figures side by side, one column per model."""
    rows = [("model", lambda f: f.model_id), ("precision", lambda f: f.precision),
            ("backend", lambda f: f"{f.backend} {f.mode}".strip()),
            ("frames timed", lambda f: str(len(f.samples_ms))),
            ("median ms", lambda f: f"{f.percentile(50):.2f}"), ("p90 ms", lambda f: f"{f.percentile(90):.2f}"),
            ("p99 ms", lambda f: f"{f.percentile(99):.2f}"),
            ("frames/s (median)", lambda f: f"{1000.0 / f.percentile(50):.1f}"),
            ("resident MiB", lambda f: f"{f.rss_mib:.0f}"), ("peak resident MiB", lambda f: f"{f.peak_rss_mib:.0f}"),
            ("load s", lambda f: f"{f.load_s:.2f}")]
    w = 2 + max(14, *(len(f.label) for f in figures), *(len(fn(f)) for _, fn in rows for f in figures))
    lines = [f"model only, batch 1, input {image_hw[0]}x{image_hw[1]}; each model in its own process, the same "
             "frames, rounds interleaved",
             f"{'':<20}" + "".join(f"{f.label:>{w}}" for f in figures)]
    lines += [f"{name:<20}" + "".join(f"{fn(f):>{w}}" for f in figures) for name, fn in rows]
    if len(figures) == 2 and figures[0].samples_ms and figures[1].samples_ms:
        a, b = figures
        lines.append(f"{b.label} / {a.label} median latency: {b.percentile(50) / a.percentile(50):.2f}")
    return "\n".join(lines)

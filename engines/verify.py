"""Polygraphy-style acceptance check: every engine against ONNX Runtime on the same real inputs.

Reference: ONNX Runtime on CPU in FP32 runs the whole model folder and keeps *every* tensor. Each
engine is then run on its own, by the runtime's ``TensorRTRunner`` given that one engine, with the
reference values of its inputs (the preprocessed images for the first graph, the upstream graphs'
ONNX Runtime outputs for later ones), so an engine is judged on its own error, not on what its
predecessors passed on. After all engines pass, the chained
TensorRT backend is compared end to end (reported, not judged: the per-engine checks are the gate).

Criterion, per output tensor and input sample (``max`` error statistic, scaled by the tensor's range):

    max |trt - ref|  <=  atol + rtol * max |ref|

A per-element ``allclose`` would judge near-zero elements of a feature map by ``atol`` alone, while
FP16 rounding error is set by the tensor's magnitude (11-bit mantissa: unit roundoff 4.9e-4 of the
value's scale; a few dozen layers accumulate ~1e-3 of the range). Tolerances (chosen, see docs/engines.md):

* fp32: atol 1e-4, rtol 1e-3 (TF32 disabled; only summation order differs, ~1e-6 relative)
* fp16: atol 1e-3, rtol 1e-2 (ten times the expected FP16 drift; a broken layer is off by >10 %)
* int8: atol 1e-2, rtol 5e-2 (explicit Q/DQ: ONNX Runtime applies the same quantization, but its
  rounding of intermediate FP32 accumulation differs)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_inspect.backends.tensorrt_runner import EngineFile, TensorRTRunner
from edge_inspect.errors import DataError, EngineError, require
from edge_inspect.manifest import EngineRecord, InputSpec, Manifest

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def allowed(self, ref_peak: float) -> float:
        return self.atol + self.rtol * ref_peak

    def as_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(atol=1e-3, rtol=1e-2),
    "int8": Tolerance(atol=1e-2, rtol=5e-2),
}


@dataclass(frozen=True)
class Comparison:
    output: str
    max_abs_error: float
    allowed: float
    ref_peak: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.allowed


def compare(name: str, actual: np.ndarray, reference: np.ndarray, tol: Tolerance) -> Comparison:
    """Max abs error of ``actual`` against ``reference`` and the error the tolerance allows for it."""
    actual = np.asarray(actual, np.float64)
    reference = np.asarray(reference, np.float64)
    if actual.shape != reference.shape:
        return Comparison(name, float("inf"), 0.0, 0.0)
    peak = float(np.max(np.abs(reference))) if reference.size else 0.0
    err = float(np.max(np.abs(actual - reference))) if reference.size else 0.0
    if not np.all(np.isfinite(actual)):
        err = float("inf")
    return Comparison(name, err, tol.allowed(peak), peak)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_images(folder: str | Path, limit: int = 8) -> list[np.ndarray]:
    """Up to ``limit`` images (sorted by name, searched recursively) as read by OpenCV (BGR / mono / 16-bit)."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--verify-images: folder not found: {folder}")
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            log.warning("%s: unreadable image, skipped", path)
            continue
        images.append(img)
        if len(images) >= limit:
            break
    if not images:
        raise DataError(f"--verify-images: no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return images


def synthetic_images(spec: InputSpec, count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Deterministic textured BGR images (smooth noise, a bright and a dark blob) at the model input size.

    Used when no ``--verify-images`` folder is given: they exercise the whole value range, but real
    line images are the better acceptance test.
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = spec.height, spec.width
    images = []
    for i in range(count):
        coarse = rng.integers(40, 216, size=(max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, size=img.shape), 0, 255).astype(np.uint8)
        if i % 2 == 1:
            cy, cx, r = h // 2, w // 3, max(min(h, w) // 10, 1)
            img[cy - r:cy + r, cx - r:cx + r] = 255 if i % 4 == 1 else 0
        images.append(img)
    return images


# --------------------------------------------------------------------------------------------
# ONNX Runtime reference (every tensor)
# --------------------------------------------------------------------------------------------


def reference_tensors(model_dir, manifest: Manifest, sample: np.ndarray, sessions=None) -> dict[str, np.ndarray]:
    """Run the ONNX graphs on CPU in FP32 and return every named tensor (input, intermediates, outputs)."""
    sessions = sessions or reference_sessions(model_dir, manifest)
    tensors = {manifest.graphs[0].inputs[0].name: sample}
    for g, sess in zip(manifest.graphs, sessions, strict=True):
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, {t.name: tensors[t.name] for t in g.inputs})
        tensors.update(zip(names, outs, strict=True))
    return tensors


def reference_sessions(model_dir, manifest: Manifest) -> list:
    ort = require("onnxruntime", "cpu", "engine verification")
    opts = ort.SessionOptions()
    # Reference arithmetic exactly as written in the graph: no fusions that reorder FP32 sums.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return [ort.InferenceSession(str(Path(model_dir) / g.file), sess_options=opts, providers=["CPUExecutionProvider"])
            for g in manifest.graphs]


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def judge(record: EngineRecord, comparisons: list[Comparison]) -> tuple[EngineRecord, list[str]]:
    """Record with tolerance and max error filled in, plus one failure message per output out of tolerance."""
    tol = TOLERANCES[record.precision]
    failures = []
    worst: dict[str, Comparison] = {}
    for c in comparisons:
        if (c.output not in worst
                or c.max_abs_error - c.allowed > worst[c.output].max_abs_error - worst[c.output].allowed):
            worst[c.output] = c
    for c in worst.values():
        if not c.ok:
            failures.append(
                f"engine '{record.graph}' ({record.file}) differs from ONNX Runtime on output '{c.output}': max abs "
                f"error {c.max_abs_error:.3g} > allowed {c.allowed:.3g} ({record.precision}: atol {tol.atol:g} + "
                f"rtol {tol.rtol:g} x max|ref| {c.ref_peak:.3g})"
            )
    max_err = max((c.max_abs_error for c in comparisons), default=0.0)
    updated = record.model_copy(update={"tolerance": tol.as_dict(), "max_abs_error": float(max_err)})
    return updated, failures


def verify_model(model_dir, manifest: Manifest, only: set[str] | None = None,
                 images_dir: str | Path | None = None, images: list[np.ndarray] | None = None) -> dict[str, float]:
    """Verify the engines named in ``only`` (default: all) and fill their records in ``manifest.engines``.

    Raises EngineError naming every engine out of tolerance. Returns the chained backend's max abs
    error per final output (informational).
    """
    from edge_inspect.preprocess import preprocess

    only = {r.graph for r in manifest.engines} if only is None else only
    if images is None:
        images = load_images(images_dir) if images_dir else synthetic_images(manifest.input)
        if not images_dir:
            log.warning("verifying on %d synthetic images; pass --verify-images DIR with real line images",
                        len(images))
    samples = [preprocess(img, manifest.input, channel_order="BGR") for img in images]
    sessions = reference_sessions(model_dir, manifest)
    refs = [reference_tensors(model_dir, manifest, s, sessions) for s in samples]
    records = {r.graph: r for r in manifest.engines}
    failures: list[str] = []
    for g in manifest.graphs:
        if g.name not in only:
            continue
        rec = records[g.name]
        comparisons = []
        # The runtime's runner, given this one engine: every output of it comes back to the host.
        with TensorRTRunner([EngineFile(g.name, Path(model_dir) / rec.file, rec.dla_core)]) as runner:
            for ref in refs:
                outs = runner.infer({t.name: ref[t.name] for t in g.inputs})
                comparisons += [compare(name, out, ref[name], TOLERANCES[rec.precision])
                                for name, out in outs.items()]
        records[g.name], fails = judge(rec, comparisons)
        failures += fails
        log.info("%s: max abs error %.3g vs ONNX Runtime (%s)", g.name, records[g.name].max_abs_error,
                 "ok" if not fails else "OUT OF TOLERANCE")
    manifest.engines = [records[g.name] for g in manifest.graphs]
    if failures:
        raise EngineError("; ".join(failures) + "; try --precision fp32, or --fp32-graph NAME for the failing graph")
    return end_to_end_errors(model_dir, manifest, samples, refs)


def end_to_end_errors(model_dir, manifest: Manifest, samples, refs) -> dict[str, float]:
    """Max abs error of the chained TensorRT backend's final outputs against ONNX Runtime."""
    from edge_inspect.backends.tensorrt import TensorRTBackend

    errors: dict[str, float] = {}
    with TensorRTBackend(model_dir, manifest) as backend:
        for sample, ref in zip(samples, refs, strict=True):
            for name, out in backend.infer({manifest.graphs[0].inputs[0].name: sample}).items():
                err = float(np.max(np.abs(out.astype(np.float64) - ref[name]))) if out.size else 0.0
                errors[name] = max(errors.get(name, 0.0), err)
    return errors

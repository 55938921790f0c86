"""Scoring a test set through a backend: what runs on the line (manifest input spec, ``preprocess``, backend).

The image is placed in the model input as the manifest says (stretched, letterboxed or tiled:
edge_inspect.geometry) and the outputs come back in the image's frame (preprocess.restore_outputs):
letterbox padding cropped off, tiles stitched. Ground-truth masks are resized (nearest) to that map, so pixel
metrics compare map and mask over the image's own pixels only, never over padding. Backends are opened by
name (the runtime's onnxruntime / tensorrt) or handed in as a factory by the caller: the torch backend lives in
the trainer, and ``edge-inspect eval --backend torch`` hands it in, so nothing here imports the trainer.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError, DataError
from ..manifest import Manifest, ScoreFusion
from ..preprocess import preprocess, restore_outputs, split_outputs

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt")  # opened by name; any other backend is handed in as a factory
BackendFactory = Callable[..., object]  # factory(model_dir, manifest=manifest) -> an unentered Backend


@dataclass
class Scored:
    """One scored test image. ``amap`` (h, w) float32 in the image's frame (model resolution, letterbox
    padding cropped; image resolution when tiled); ``mask`` (h, w) bool at map size,
    None for good images (all False) and for defect images without a mask file. ``score_parts``
    {"map", "global"} (score units, summing to ``score``) when the manifest has score_fusion, else None."""

    path: Path
    rel_path: str
    defect_type: str
    label: int
    mask_path: Path | None
    score: float
    amap: np.ndarray
    mask: np.ndarray | None
    score_parts: dict | None = None


def open_backend(backend: str | BackendFactory, model_dir: Path, manifest: Manifest):
    """An unentered Backend for ``model_dir``: ``backend`` is a runtime backend's name (see BACKENDS) or a
    factory called as ``backend(model_dir, manifest=manifest)`` (e.g. the trainer's TorchBackend class)."""
    if callable(backend):
        return backend(model_dir, manifest=manifest)
    if backend == "torch":
        raise ConfigError("backend 'torch' belongs to the trainer: hand in its class "
                          "(trainer.evaluate_backend.TorchBackend), as 'edge-inspect eval --backend torch' "
                          "does")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}, or hand in a "
                          "backend factory")
    from ..backends.select import open_backend as open_runtime_backend

    try:
        return open_runtime_backend(model_dir, backend, manifest=manifest, diagnostics=True)
    except ImportError as exc:
        raise BackendError(f"backend '{backend}' is not available here: {exc}") from exc


class Progress:
    """tqdm when installed, else a log line every 10 s."""

    def __init__(self, total: int, enabled: bool, desc: str = "eval"):
        self.total, self.done, self.last, self.desc = total, 0, time.monotonic(), desc
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", desc=desc, file=sys.stderr)
            except ImportError:
                pass
        self.enabled = enabled

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (time.monotonic() - self.last > 10 or self.done == self.total):
            self.last = time.monotonic()
            log.info("%s: %d / %d images scored", self.desc, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def track(items, total: int, desc: str, enabled: bool = True):
    """Yield ``items`` while a Progress of ``total`` steps advances with each one."""
    bar = Progress(total, enabled, desc)
    try:
        for item in items:
            yield item
            bar.step()
    finally:
        bar.close()


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def scoring_manifest(manifest: Manifest) -> Manifest:
    """The manifest to open the backend with: one that also asks for score_fusion's global output.

    Backends return only score, map and ``extra_outputs``; an export that fused the score but did not
    list its global output there would otherwise leave the score parts unexplained.
    """
    fusion = manifest.score_fusion
    if fusion is None or fusion.global_output in manifest.extra_outputs:
        return manifest
    return manifest.model_copy(update={"extra_outputs": [*manifest.extra_outputs, fusion.global_output]})


def score_parts(scores, global_scores, fusion: ScoreFusion) -> list[dict]:
    """Split fused image scores into the anomaly map's and the image-level Gaussian's contributions.

    scores (B,) image scores, global_scores (B,) the graph output ``fusion.global_output``. Returns B
    dicts {"map": score − global, "global": fusion.global_part(g)} in score units (they sum to the score).
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    g = np.asarray(global_scores, np.float64).reshape(-1)
    if s.shape != g.shape:
        raise DataError(f"{g.size} global scores for {s.size} image scores")
    parts = []
    for score, glob in zip(s, g, strict=True):
        global_part = float(fusion.global_part(float(glob)))
        parts.append({"map": float(score) - global_part, "global": global_part})
    return parts


def batch_score_parts(out: dict, fusion: ScoreFusion | None, scores: np.ndarray) -> list[dict | None]:
    """score_parts for one inference batch ``out``; Nones when there is no fusion or its output is absent."""
    n = scores.size
    if fusion is None:
        return [None] * n
    g = out.get(fusion.global_output)
    if g is None or np.asarray(g).size != n or not np.isfinite(g).all():
        return [None] * n
    return score_parts(scores, g, fusion)


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    """(median, 99th percentile) of ``values``; (None, None) when empty."""
    if not values:
        return None, None
    return float(np.median(values)), float(np.percentile(values, 99))


def score_samples(backend, manifest: Manifest, samples, batch_size: int = 1, progress: bool = True):
    """Run every sample through an entered backend.

    Returns (scored: list[Scored], skipped: list[{"path", "reason"}], latency: dict). A file that
    cannot be read, a mask of the wrong size or a non-finite score skips that image (logged).
    Latency per image is preprocess + inference (file decoding excluded), after one warm-up run.
    With ``manifest.score_fusion`` each Scored gets its score parts when the backend returns the global
    output (open the backend with scoring_manifest(manifest) so it does).
    """
    from ..data.mvtec import load_image, load_mask

    spec = manifest.input
    backend.infer({spec.name: np.zeros((1, 3, spec.height, spec.width), np.float32)})  # warm-up
    scored: list[Scored] = []
    skipped: list[dict] = []
    per_image_ms: list[float] = []
    infer_ms: list[float] = []
    pending: list[tuple] = []  # (sample, x (n,3,h,w), mask at original size, preprocess ms, image (H, W))
    bar = Progress(len(samples), progress)

    def flush() -> None:
        if not pending:
            return
        batch = np.concatenate([p[1] for p in pending])
        t0 = time.perf_counter()
        out = backend.infer({spec.name: batch})
        dt = (time.perf_counter() - t0) * 1e3 / len(pending)
        per_image = split_outputs(out, [len(p[1]) for p in pending])
        for (sample, _, mask, pre_ms, image_hw), raw in zip(pending, per_image, strict=True):
            one = restore_outputs(raw, image_hw, manifest)
            score = float(np.asarray(one[manifest.score_output], np.float64).reshape(-1)[0])
            amap = np.asarray(one[manifest.map_output], np.float32)
            amap = amap.reshape(amap.shape[-2:])
            part = batch_score_parts(one, manifest.score_fusion, np.asarray([score]))[0]
            if not np.isfinite(score) or not np.isfinite(amap).all():
                skipped.append({"path": sample.rel_path,
                                "reason": "the model returned a non-finite score or map"})
                log.warning("eval: skipped %s: non-finite model output", sample.rel_path)
                continue
            mask_small = None if mask is None else _resize_mask(mask, amap.shape)
            scored.append(Scored(sample.path, sample.rel_path, sample.defect_type, int(sample.label),
                                 sample.mask_path, score, amap.copy(), mask_small, part))
            per_image_ms.append(pre_ms + dt)
            infer_ms.append(dt)
        bar.step(len(pending))
        pending.clear()

    try:
        for sample in samples:
            try:
                image = load_image(sample.path)
                mask = load_mask(sample.mask_path, shape=image.shape) if sample.mask_path else None
                t0 = time.perf_counter()
                x = preprocess(image, spec, channel_order="RGB")
                pre_ms = (time.perf_counter() - t0) * 1e3
            except DataError as exc:  # ImageError included
                skipped.append({"path": sample.rel_path, "reason": str(exc)})
                log.warning("eval: skipped %s: %s", sample.rel_path, exc)
                bar.step()
                continue
            pending.append((sample, x, mask, pre_ms, image.shape[:2]))
            if sum(len(p[1]) for p in pending) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()

    med, p99 = _stats(per_image_ms)
    imed, ip99 = _stats(infer_ms)
    latency = {"median": med, "p99": p99, "infer_median": imed, "infer_p99": ip99, "batch_size": batch_size,
               "includes": "preprocess + inference per image (image decoding excluded), "
                           "after one warm-up run"}
    return scored, skipped, latency

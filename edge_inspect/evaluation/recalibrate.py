"""Recalibrate a model folder on site, without retraining: good parts seen by the real camera → new thresholds.

The graphs stay as they are; only ``manifest.calibration`` changes. The previous manifest is kept in
``MODEL_DIR/calibrations/`` and the new one replaces ``manifest.json`` atomically, so a running station
never reads half a file and picks the new thresholds up with ``reload``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..manifest import MANIFEST_NAME, Calibration, Manifest, load_manifest, save_manifest, utc_now
from ..preprocess import preprocess, restore_outputs
from .calibration import calibrate

log = logging.getLogger(__name__)

HISTORY_DIR = "calibrations"


@dataclass
class Recalibration:
    """What ``recalibrate`` produced: the new manifest (not yet written) and the one it replaces."""

    model_dir: Path
    previous: Manifest
    manifest: Manifest

    @property
    def calibration(self) -> Calibration:
        return self.manifest.calibration


def score_images(backend, manifest: Manifest, images: Iterable[np.ndarray], channel_order: str = "RGB",
                 progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) float64 and anomaly maps of (H, W, 3) uint8 images: (N, h, w) float32, or a list of
    (h, w) maps when they differ in size (letterboxed or tiled images of different shapes)."""
    scores, maps = [], []
    for image in progress(images) if progress else images:
        out = backend.infer({manifest.input.name: preprocess(image, manifest.input, channel_order=channel_order)})
        out = restore_outputs(out, image.shape[:2], manifest)
        scores.append(float(np.asarray(out[manifest.score_output]).reshape(-1)[0]))
        maps.append(np.asarray(out[manifest.map_output], np.float32)[0, 0])
    if not scores:
        raise DataError("no images were scored")
    same = len({m.shape for m in maps}) == 1
    return np.asarray(scores, np.float64), np.stack(maps) if same else maps


def recalibrate(model_dir: str | Path, good_scores: np.ndarray, good_maps: np.ndarray, good_source: str,
                defect_scores: np.ndarray | None = None, defects_source: str | None = None,
                target_frr: float = 0.005) -> Recalibration:
    """A new calibration for ``model_dir`` from scores of good parts the model never trained on (N,) and
    their maps ((N, h, w), or a list of (h, w)); optionally labelled defects' scores (M,). Nothing is
    written (see ``write``).

    The score and map lower bounds of the current calibration carry over (they are properties of the
    graphs). Raises ManifestError/ModelError for a bad folder, DataError for bad scores, ConfigError for a
    bad target.
    """
    model_dir = Path(model_dir)
    previous = load_manifest(model_dir)
    old = previous.calibration
    calibration = calibrate(
        good_scores, defect_scores=defect_scores, good_maps=good_maps, target_frr=target_frr, source=good_source,
        defects_source=defects_source, score_lower_bound=old.score_lower_bound, map_lower_bound=old.map_lower_bound,
    )
    manifest = previous.model_copy(update={"calibration": calibration})
    return Recalibration(model_dir, previous, Manifest.model_validate(manifest.model_dump()))


def write(result: Recalibration) -> Path:
    """Keep the current manifest in ``calibrations/`` and write the new one atomically; the kept file's path."""
    history = result.model_dir / HISTORY_DIR
    history.mkdir(exist_ok=True)
    stamp = utc_now().replace(":", "").replace("+0000", "Z")
    kept = history / f"manifest-{stamp}.json"
    n = 1
    while kept.exists():  # two calibrations within a second
        kept = history / f"manifest-{stamp}-{n}.json"
        n += 1
    shutil.copy2(result.model_dir / MANIFEST_NAME, kept)
    save_manifest(result.manifest, result.model_dir)
    log.info("calibration of %s replaced; previous manifest kept as %s", result.model_dir, kept)
    return kept


def describe(cal: Calibration) -> str:
    """The calibration in a few lines a person reads: threshold, expected false rejects, escapes."""
    lines = [f"image threshold {cal.image_threshold:.6g}"]
    tm = cal.threshold_model
    if tm is None:
        lines[0] += f" ({cal.image_threshold_method}; no false-reject model: calibrated before schema 3)"
    else:
        pct = 100 * tm.confidence
        lines[0] += (f" for a {100 * tm.target_frr:.2g} % false-reject rate "
                     f"({pct:.0f} % interval of that threshold: "
                     f"{tm.threshold_interval[0]:.4g} to {tm.threshold_interval[1]:.4g})")
        lines.append(f"expected false rejects of good parts: {100 * tm.expected_frr:.2f} % "
                     f"({pct:.0f} % interval {100 * tm.frr_interval[0]:.2f} to {100 * tm.frr_interval[1]:.2f} %), "
                     f"from {tm.n} good scores ({tm.source})")
        if tm.n < 30:
            lines.append(f"note: {tm.n} good images are few; 30 or more narrow the interval")
    if cal.escape_rate is not None and cal.defect_scores is not None:
        n = cal.defect_scores.count
        lo, hi = cal.escape_interval or (cal.escape_rate, cal.escape_rate)
        f1 = cal.image_threshold_f1
        lines.append(f"escapes: {round(cal.escape_rate * n)} of {n} labelled defects pass "
                     f"({100 * cal.escape_rate:.1f} %, interval {100 * lo:.1f} to {100 * hi:.1f} %)"
                     + (f"; F1-optimal threshold {f1:.6g}" if f1 is not None else ""))
    lines.append(f"pixel threshold {cal.pixel_threshold:.6g}")
    return "\n".join(lines)

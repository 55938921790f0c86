"""Export-time scoring of image files through the exported graphs, in each image's own frame.

The graphs give one row per model input: one per image, or one per tile when the manifest tiles. The
calibration wants one score per image and maps without letterbox padding, as the line sees them, so rows
are grouped by image here and brought into the image frame with the runtime's ``restore_outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_inspect.data.mvtec import load_image
from edge_inspect.manifest import Manifest
from edge_inspect.preprocess import preprocess, restore_outputs, split_outputs

from .train import _progress, cross_fitted


@dataclass
class FileScores:
    """Every output of the graphs for some image files: ``rows`` {name: (R, ...)} stacked over all model
    inputs, ``counts`` rows per file (its tile count, or 1), ``image_hws`` each file's (H, W)."""

    rows: dict[str, np.ndarray]
    counts: list[int]
    image_hws: list[tuple[int, int]]

    @property
    def groups(self) -> np.ndarray:
        """(R,) the file index of each row."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def image_outputs(self, manifest: Manifest, rows: dict[str, np.ndarray] | None = None) -> list[dict]:
        """Per file, its outputs in the image frame (restore_outputs) of ``rows`` (default: the graphs')."""
        rows = self.rows if rows is None else rows
        return [restore_outputs(one, hw, manifest)
                for one, hw in zip(split_outputs(rows, self.counts), self.image_hws, strict=True)]


def score_files(model_dir: Path, manifest: Manifest, files: list[Path], desc: str) -> FileScores:
    """Every output of the exported graphs (ONNX Runtime) for image files, placed per ``manifest.input``."""
    from edge_inspect.backends.onnxrt import OnnxRuntimeBackend

    outputs: dict[str, list[np.ndarray]] = {}
    counts, hws = [], []
    with OnnxRuntimeBackend(model_dir, manifest, diagnostics=True) as backend:
        for f in _progress(files, desc=desc, leave=False):
            image = load_image(f)
            x = preprocess(image, manifest.input, channel_order="RGB")
            for k, v in backend.infer({"image": x}).items():
                outputs.setdefault(k, []).append(np.asarray(v, np.float32))
            counts.append(len(x))
            hws.append(tuple(image.shape[:2]))
    rows = {k: np.concatenate(v).astype(np.float64 if k in ("score", "global_score") else np.float32)
            for k, v in outputs.items()}
    return FileScores(rows, counts, hws)


def image_scores(scored: FileScores, manifest: Manifest) -> np.ndarray:
    """(N,) float64 image scores as the line gives them (max over tiles when tiled)."""
    return np.asarray([float(np.asarray(o[manifest.score_output]).reshape(-1)[0])
                       for o in scored.image_outputs(manifest)])


def held_out_goods(head, scored: FileScores, manifest: Manifest) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cross-fitted (trainer.train.cross_fitted, tiles of one image in one fold) image scores (N,) and maps
    in the image frame (a list of (h, w), letterbox padding cropped, tiles stitched) of held-out goods."""
    comps = (torch.from_numpy(scored.rows[k]).float() for k in ("rstpm_map", "region_map", "global_score"))
    row_scores, row_maps = cross_fitted(head, *comps, groups=scored.groups)
    rows = {manifest.score_output: row_scores.numpy().astype(np.float64), manifest.map_output: row_maps.numpy()}
    per_image = scored.image_outputs(manifest, rows)
    scores = np.asarray([float(o[manifest.score_output].reshape(-1)[0]) for o in per_image])
    return scores, [np.asarray(o[manifest.map_output])[0, 0] for o in per_image]

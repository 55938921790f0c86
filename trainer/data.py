"""Training data in memory: good images placed in the model input (stretched, letterboxed or tiled), as uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edge_inspect.data.mvtec import Sample, load_image
from edge_inspect.errors import DataError
from edge_inspect.geometry import cut_tiles, fit_image, tile_grid
from edge_inspect.manifest import InputSpec
from edge_inspect.preprocess import interpolation, preprocess

# Held-out goods set the threshold: fewer than about 20 cannot pin a 0.5 % false-reject rate (the
# threshold model's interval says how wide it gets), so small sets give up to a third of their images.
MIN_HOLDOUT = 20


def split_train_holdout(samples: list[Sample], holdout_fraction: float, max_images: int | None, seed: int):
    """Seeded split of good training samples into (train, holdout); holdout calibrates thresholds.

    Holds out ``holdout_fraction`` of the images, but at least MIN_HOLDOUT (at most a third of the set)
    and at least 2 when there are 4 or more images and the fraction is > 0.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    samples = [samples[i] for i in order]
    n_hold = int(round(len(samples) * holdout_fraction)) if len(samples) >= 10 else 0
    if holdout_fraction > 0 and len(samples) >= 10:
        n_hold = max(n_hold, min(MIN_HOLDOUT, len(samples) // 3))
    if holdout_fraction > 0 and len(samples) >= 4:
        n_hold = max(n_hold, 2)
    holdout, train = samples[:n_hold], samples[n_hold:]
    if max_images is not None:
        train = train[:max_images]
    if len(train) < 2:
        raise DataError(f"need at least 2 good training images after holding out {n_hold}; found {len(samples)}")
    return train, holdout


def load_rgb_stack(samples: list[Sample] | list[Path], spec: InputSpec, progress=None) -> np.ndarray:
    """(N, h, w, 3) uint8 RGB model inputs of image files (Samples or paths), placed as the runtime places
    them (edge_inspect.geometry): stretched or letterboxed to (spec.height, spec.width), or, when the spec
    tiles, every tile of every image (N = the total tile count, image by image)."""
    out = []
    for s in progress(samples) if progress else samples:
        img = load_image(s.path if isinstance(s, Sample) else s)
        if spec.tiles is not None:
            out.extend(cut_tiles(img, tile_grid(img.shape[:2], spec.hw, spec.tiles.overlap), spec.pad_value))
        else:
            out.append(fit_image(img, spec.hw, spec.fit, spec.pad_value, interpolation(spec))[0])
    return np.stack(out) if out else np.empty((0, *spec.hw, 3), np.uint8)


def to_input(rgb: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB → (N, 3, H, W) float32 normalised exactly as the runtime does."""
    return torch.from_numpy(np.concatenate([preprocess(im, spec, channel_order="RGB") for im in rgb]))

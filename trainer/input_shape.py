"""The model input's shape and placement for a training run: chosen from the training images when the
config leaves them open, and written into the manifest's input spec.

The rule (README, "Part geometry"): the median width/height of the training goods decides. Near square
(within 1.25 of 1): 256x256, stretched, as before. Otherwise about 256² pixels at that aspect ratio, each
side a multiple of 32, letterboxed. An explicit ``image_size`` keeps its shape; its fit is then letterbox
only when the images' median aspect differs from the input's by more than 10 %. Tiling is never chosen
by default (it multiplies the cost per part by the tile count, and only the defect sizes, which training
does not see, say whether it is needed).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from edge_inspect.data.mvtec import Sample, load_image, read_image_header
from edge_inspect.geometry import choose_input_shape
from edge_inspect.manifest import InputSpec, TileSpec

from .config import TrainConfig

log = logging.getLogger(__name__)
FIT_TOLERANCE = 1.10  # aspect ratios within this factor of the input's are stretched, not letterboxed


def image_aspects(samples: list[Sample]) -> list[float]:
    """Width / height of each sample, from the file header (decoded only when the header says nothing)."""
    aspects = []
    for s in samples:
        header = read_image_header(s.path)
        if header is not None:
            aspects.append(header.width / header.height)
        else:
            h, w = load_image(s.path).shape[:2]
            aspects.append(w / h)
    return aspects


def resolve_input_shape(cfg: TrainConfig, samples: list[Sample]) -> TrainConfig:
    """``cfg`` with ``image_size`` and ``fit`` settled for these training images; logs one line saying what
    was chosen and why. A config with both set comes back unchanged (and nothing is read)."""
    if cfg.image_size is not None and cfg.fit is not None:
        return cfg
    if cfg.tile_overlap is not None:  # tiles are cut at the image's own resolution: nothing to fit
        size = cfg.image_size or (256, 256)
        log.info("input shape: %dx%d tiles (height x width) with overlap %g, cut at the images' own resolution",
                 *size, cfg.tile_overlap)
        return cfg.override({"image_size": size, "fit": "stretch"})
    aspects = image_aspects(samples)
    if cfg.image_size is None:
        size, auto_fit, why = choose_input_shape(aspects)
        fit = cfg.fit or auto_fit
        why += "" if fit == auto_fit else f" (but {fit} as configured)"
    else:
        size = cfg.image_size
        r, r_in = float(np.median(aspects)), size[1] / size[0]
        fit = "letterbox" if abs(math.log(r / r_in)) > math.log(FIT_TOLERANCE) else "stretch"
        why = (f"{size[0]}x{size[1]} as configured (aspect {r_in:.2f}); median image aspect (width/height) "
               f"{r:.2f} of {len(aspects)} images: {fit}")
    log.info("input shape: %s; set --image-size HxW / --set fit=... to choose", why)
    return cfg.override({"image_size": size, "fit": fit})


def spec_for(cfg: TrainConfig) -> InputSpec:
    """ImageNet normalisation at the run's input shape and placement (what the teachers were trained with).
    Runs from before these settings: a square input, stretched."""
    h, w = cfg.image_size or (256, 256)
    tiles = TileSpec(overlap=cfg.tile_overlap) if cfg.tile_overlap is not None else None
    return InputSpec(height=h, width=w, fit=cfg.fit or "stretch", tiles=tiles)

"""Validation without real defects: held-out training goods plus pseudo-anomalies made on those same goods.

Each held-out good image gives two samples: itself (label 0, empty mask) and one pseudo-anomaly made on
it with a fixed seed (label 1, its mask), so the figure is reproducible run to run. The validation
anomalies come only from families the discriminator never trains on (trainer.validation_anomalies: shade,
smear, displaced own surface, cracks), so the discriminator is not graded on the exam it trained for.

The validation figure is ``0.5 · (image AUROC + pixel AUROC)``: the verdict is per part, the map is
what an operator looks at, and neither alone should decide.

Held-out goods and the threshold. The run's held-out goods also set the score statistics and the
threshold at export. When there are at least 2 × MIN_HOLDOUT of them they are split in two halves: one
for selection (validation), one for calibration, so a threshold is never calibrated on images that chose
the settings. With fewer the halves would be too small to pin a 0.5 % false-reject rate, so both uses
share all the held-out goods, and the run (and the manifest) says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_inspect.evaluation.metrics import image_auroc, pixel_auroc

from .data import MIN_HOLDOUT, load_rgb_stack, to_input

log = logging.getLogger(__name__)
# Seed offset of the validation anomalies: far from the training generator's (seed + 1).
VALIDATION_SEED_OFFSET = 7919


def split_holdout(holdout: list, min_each: int = MIN_HOLDOUT) -> tuple[list, list, bool]:
    """(calibration, validation, shared): alternate halves when each gets ``min_each``, else both all of it."""
    if len(holdout) >= 2 * min_each:
        return holdout[0::2], holdout[1::2], False
    return list(holdout), list(holdout), True


@dataclass
class ValidationSet:
    """images (2N,3,H,W) normalised; labels (2N,) 0 good / 1 pseudo-anomaly; masks (2N,H,W) bool;
    source (2N,) index of the good image each sample was made from (for folds)."""

    images: torch.Tensor
    labels: np.ndarray
    masks: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def make_validation_set(paths: list[Path], cfg, spec, limit: int | None = None) -> ValidationSet:
    """Goods from ``paths`` (at most ``limit``) and one seeded validation anomaly on each."""
    from .validation_anomalies import ValidationAnomalies

    paths = list(paths)[:limit] if limit else list(paths)
    rgb = load_rgb_stack(paths, spec)
    gen = ValidationAnomalies(seed=cfg.seed + VALIDATION_SEED_OFFSET)
    pairs = [gen(im) for im in rgb]
    all_rgb = np.concatenate([rgb, np.stack([p[0] for p in pairs])])
    n, (h, w) = len(rgb), rgb.shape[1:3]
    masks = np.concatenate([np.zeros((n, h, w), bool), np.stack([p[1] > 0 for p in pairs])])
    return ValidationSet(images=to_input(all_rgb, spec), labels=np.repeat([0, 1], n), masks=masks,
                         source=np.tile(np.arange(n), 2))


def figure(image_auroc_value: float, pixel_auroc_value: float) -> float:
    """The one number selection maximises."""
    return 0.5 * (image_auroc_value + pixel_auroc_value)


def pooled_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Masks (N,H,W) bool → (N,h,w) bool at a map's resolution: a cell is defective when half of it is."""
    m = torch.from_numpy(masks).float().unsqueeze(1)
    return (F.adaptive_avg_pool2d(m, size)[:, 0] >= 0.5).numpy() | _any_thin(m, size)


def _any_thin(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Cells crossed by a defect too thin to fill half a cell (cracks) still count as defective when the
    defect is thin everywhere: without this a 1-px crack would vanish at stride 4."""
    frac = F.adaptive_avg_pool2d(m, size)[:, 0]
    thin = frac.flatten(1).amax(dim=1) < 0.5  # no cell half-filled: a thin defect
    return ((frac > 0) & thin[:, None, None]).numpy()


def scores_of(labels: np.ndarray, masks: np.ndarray, maps: torch.Tensor, image_scores=None) -> dict:
    """{image_auroc, pixel_auroc, figure} of maps (N,1,h,w) against masks already at (N,h,w); image score
    = the map's max unless ``image_scores`` (N,) is given."""
    maps = maps.float()
    s = maps.flatten(1).amax(dim=1).numpy() if image_scores is None else np.asarray(image_scores, np.float64)
    img = image_auroc(labels, s)
    px = pixel_auroc(list(masks), list(maps[:, 0].numpy()))
    return {"image_auroc": round(float(img), 5), "pixel_auroc": round(float(px), 5),
            "figure": round(figure(img, px), 5)}


class EpochValidator:
    """The per-epoch validation figure at stride 4 (cheap): stage 1 grades the students' map (both
    pairs' product), stage 2 the RSTPM map (st^e × discriminator). Teacher features are computed once."""

    def __init__(self, model, vset: ValidationSet, device, batch: int):
        self.model, self.vset, self.device, self.batch = model, vset, device, batch
        self.teacher = []
        with torch.no_grad():
            for i in range(0, len(vset), batch):
                x = vset.images[i : i + batch].to(device).contiguous(memory_format=torch.channels_last)
                self.teacher.append((model.teacher1(x), model.teacher2(x)))
        self.masks = None

    @torch.no_grad()
    def _maps(self):
        """Per batch: (d1, d2) pair maps at stride 4."""
        head = self.model.head
        out = []
        for k, (t1, t2) in enumerate(self.teacher):
            i = k * self.batch
            x = self.vset.images[i : i + self.batch].to(self.device).contiguous(memory_format=torch.channels_last)
            s1 = self.model.student1(x)
            s2 = self.model.student2(t1[3], *t2)
            out.append(head.pair_maps(t1[:3], s1, t2, s2))
        return out

    @torch.no_grad()
    def __call__(self, stage: int) -> dict:
        modes = [m.training for m in self.model.modules()]
        self.model.eval()
        head = self.model.head
        maps = []
        for d1, d2 in self._maps():
            st = (d1 + d2).prod(dim=1, keepdim=True) if d2 is not None else d1.prod(dim=1, keepdim=True)
            if stage == 2 and head.use_disc:
                prob = torch.sigmoid(head.disc_logit(head.disc_input(d1, d2)))
                st = prob if head.st_exponent == 0 else st.pow(head.st_exponent) * prob
            maps.append(st.float().cpu())
        maps = torch.cat(maps)
        if self.masks is None:
            self.masks = pooled_masks(self.vset.masks, tuple(maps.shape[-2:]))
        for m, mode in zip(self.model.modules(), modes, strict=True):
            m.training = mode
        return scores_of(self.vset.labels, self.masks, maps)

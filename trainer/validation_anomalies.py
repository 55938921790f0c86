"""Validation anomalies from families the discriminator never trains on.

The discriminator learns its job on PseudoAnomalyGenerator's foreign-texture blends. Graded on more of the
same (validation v1: the same generator with another seed) it looks better than it is, and every head
setting that leans on it wins: on magnetic_tile that choice dropped the regional Gaussian and lost 0.10 pixel
AUROC on real defects (README, "Choosing without test images"). A validation set must stand for defects
nobody has seen, so these anomalies come from *other* families, each made from the good image itself (no
foreign texture, no colour: a grey part stays grey), one family per sample in equal shares:

* ``shade``: a large soft-edged region (at most half the part) 10-30 % brighter or darker, or with its
  contrast flattened or exaggerated (stains, uneven coating, the low-contrast regions a local map misses);
* ``smear``: a blob where the surface texture is blurred away (wear, fraying, a smudge);
* ``displace``: a patch of the part's own surface, rotated, pasted elsewhere with hard edges (scars,
  misplaced material; CutPaste's idea);
* ``crack``: a thin wandering polyline, darker or brighter than its surroundings.

Masks mark the pixels the change reaches; a sample whose change is too faint to see is drawn again.
Numpy/OpenCV only; seeded, so a run's validation set is the same every time.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_inspect.errors import ImageError

from .pseudo_anomaly import PseudoAnomalyGenerator

FAMILIES = ("shade", "smear", "displace", "crack")
_MIN_MEAN_CHANGE = 6.0  # grey levels, mean |change| inside the mask: fainter is label noise
_TRIES = 10


class ValidationAnomalies:
    """Call with an (H, W, 3) uint8 RGB good image: returns (image (H, W, 3) uint8, mask (H, W) float32 in
    {0, 1}, family name). Outside the mask the image is unchanged; the mask is never empty."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        # its Perlin and crack masks only (no textures): coarse blobs for shade, any scale for the others
        self._coarse = PseudoAnomalyGenerator(perlin_scale_range=(0, 2), threshold=0.2, seed=seed + 1,
                                              clean_fraction=0.0)
        self._masks = PseudoAnomalyGenerator(perlin_scale_range=(1, 4), seed=seed + 2, clean_fraction=0.0)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ImageError("validation anomaly input must be an (H, W, 3) uint8 RGB image")
        family = FAMILIES[int(self.rng.integers(len(FAMILIES)))]
        make = getattr(self, f"_{family}")
        img = image.astype(np.float32)
        for _ in range(_TRIES):
            out, mask = make(img)
            if mask.any() and float(np.abs(out[mask] - img[mask]).mean()) >= _MIN_MEAN_CHANGE:
                break
        result = image.copy()
        result[mask] = np.clip(np.rint(out[mask]), 0, 255).astype(np.uint8)
        return result, mask.astype(np.float32), family

    def _shade(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        for _ in range(_TRIES):  # a region, not the whole part
            region = self._coarse.mask(h, w)
            if region.mean() <= 0.5:
                break
        soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigmaX=max(1.0, 0.03 * max(h, w)))
        if self.rng.random() < 0.5:  # 10-30 % brighter or darker
            shaded = img * (1.0 + self.rng.choice([-1.0, 1.0]) * self.rng.uniform(0.1, 0.3))
        else:  # contrast around the local mean: flattened or exaggerated
            local_mean = cv2.blur(img, (max(3, h // 8) | 1, max(3, w // 8) | 1))
            gain = self.rng.uniform(0.3, 0.7) if self.rng.random() < 0.5 else self.rng.uniform(1.5, 2.2)
            shaded = local_mean + gain * (img - local_mean)
        out = img + soft[:, :, None] * (shaded - img)
        return out, soft > 0.5

    def _smear(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        mask = self._masks.mask(h, w)
        blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=self.rng.uniform(2.0, 6.0))
        return np.where(mask[:, :, None], blurred, img), mask

    def _displace(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        ph = int(self.rng.uniform(0.05, 0.25) * h) + 2
        pw = int(self.rng.uniform(0.05, 0.25) * w) + 2
        sy, sx = int(self.rng.integers(0, h - ph + 1)), int(self.rng.integers(0, w - pw + 1))
        patch = img[sy : sy + ph, sx : sx + pw]
        if self.rng.random() < 0.5:
            patch = patch[::-1]
        patch = np.rot90(patch, int(self.rng.integers(0, 4))).copy()
        ph, pw = patch.shape[:2]
        if ph > h or pw > w:
            patch = patch[:h, :w]
            ph, pw = patch.shape[:2]
        dy, dx = int(self.rng.integers(0, h - ph + 1)), int(self.rng.integers(0, w - pw + 1))
        out = img.copy()
        out[dy : dy + ph, dx : dx + pw] = patch
        mask = np.zeros((h, w), bool)
        mask[dy : dy + ph, dx : dx + pw] = True
        return out, mask

    def _crack(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        mask = self._masks.line_mask(h, w)
        delta = self.rng.choice([-1.0, 1.0]) * self.rng.uniform(30, 90)
        return np.where(mask[:, :, None], img + delta, img), mask

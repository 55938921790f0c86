"""Validation anomalies: every family is drawn, each changes the good image only inside its non-empty mask
and visibly so, grey parts stay grey, and a seed gives the same set."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.errors import ImageError
from trainer.validation_anomalies import _MIN_MEAN_CHANGE, FAMILIES, ValidationAnomalies


def _grey_part(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 110 + 25 * np.sin(np.arange(w) / 5.0)[None, :] + rng.normal(0, 6, (h, w))
    return np.repeat(np.clip(base, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def test_families_change_only_inside_a_visible_mask_and_keep_grey():
    gen = ValidationAnomalies(seed=3)
    seen = set()
    for i in range(40):
        good = _grey_part(i)
        img, mask, family = gen(good)
        seen.add(family)
        m = mask > 0
        assert m.any() and img.shape == good.shape and img.dtype == np.uint8
        assert np.array_equal(img[~m], good[~m])
        change = np.abs(img[m].astype(np.float32) - good[m].astype(np.float32)).mean()
        assert change >= _MIN_MEAN_CHANGE - 0.5, family  # rounding to uint8 may take off half a level
        assert np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2])
    assert seen == set(FAMILIES)


def test_a_seed_gives_the_same_anomalies_and_bad_input_is_refused():
    goods = [_grey_part(i) for i in range(6)]
    a = [ValidationAnomalies(seed=5)(g) for g in goods]
    b = [ValidationAnomalies(seed=5)(g) for g in goods]
    for (ia, ma, fa), (ib, mb, fb) in zip(a, b, strict=True):
        assert fa == fb and np.array_equal(ia, ib) and np.array_equal(ma, mb)
    with pytest.raises(ImageError):
        ValidationAnomalies(seed=0)(np.zeros((8, 8), np.uint8))


def test_shade_regions_are_large_and_cracks_thin():
    gen = ValidationAnomalies(seed=11)
    img = _grey_part(0).astype(np.float32)
    shade = [gen._shade(img)[1].mean() for _ in range(10)]
    crack = [gen._crack(img)[1].mean() for _ in range(10)]
    assert np.median(shade) > 0.05 and max(crack) < 0.05

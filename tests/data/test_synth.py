"""Synthetic production line: frames, defect masks, MVTec-format category writer, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.cli import main
from edge_inspect.data.mvtec import MVTecCategory, fingerprint, load_image, load_mask
from edge_inspect.data.synth import (
    DEFECT_TYPES,
    MAX_DEFECT_AREA,
    MIN_DEFECT_AREA,
    CategoryExistsError,
    make_synthetic_category,
    render_part,
)
from edge_inspect.errors import ConfigError, DataError


def test_good_part_shape_and_empty_mask():
    image, mask = render_part(np.random.default_rng(0))
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert mask.shape == (256, 256) and mask.dtype == bool and not mask.any()
    # A bright part on a dark belt: the centre region is metal, the corners belt.
    assert image[:8, :8].mean() < 80 < image[100:156, 40:80].mean()


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defect_masks_sized_and_visible(kind):
    for seed in range(8):
        good, _ = render_part(np.random.default_rng(seed), 128)
        bad, mask = render_part(np.random.default_rng(seed), 128, kind)
        area = mask.mean()
        assert MIN_DEFECT_AREA * 0.8 <= area <= MAX_DEFECT_AREA, (kind, seed, area)
        # Same seed -> same part, belt and lighting up to the defect; only sensor noise differs elsewhere.
        diff = np.abs(bad.astype(np.int16) - good).mean(axis=2)
        assert diff[mask].mean() > 25, (kind, seed)
        assert diff[~mask].mean() < 6, (kind, seed)


def test_deterministic_and_varied():
    a, ma = render_part(np.random.default_rng(7), 96, "scratch")
    b, mb = render_part(np.random.default_rng(7), 96, "scratch")
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    goods = [render_part(np.random.default_rng(s), 96)[0].astype(np.float32) for s in range(6)]
    # Good parts differ in pose/lighting (more than sensor noise) but stay the same kind of scene.
    pair_diffs = [np.abs(goods[0] - g).mean() for g in goods[1:]]
    assert min(pair_diffs) > 4
    means = [g.mean() for g in goods]
    assert max(means) - min(means) < 25


def test_other_sizes_and_bad_arguments():
    image, mask = render_part(np.random.default_rng(1), 64, "hole")
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and mask.any()
    with pytest.raises(ConfigError, match="unknown defect"):
        render_part(np.random.default_rng(0), 64, "dent")
    with pytest.raises(ConfigError):
        render_part(np.random.default_rng(0), 16)


def test_make_synthetic_category_layout_and_determinism(tmp_path):
    kwargs = dict(n_train=3, n_test_good=2, n_test_per_defect=2, size=64, seed=3)
    path = make_synthetic_category(tmp_path / "a", category="gear", **kwargs)
    assert path == tmp_path / "a" / "gear"
    cat = MVTecCategory(tmp_path / "a", "gear")
    assert [s.rel_path for s in cat.train_samples()] == [
        "train/good/000.png",
        "train/good/001.png",
        "train/good/002.png",
    ]
    test = cat.test_samples()  # require_masks: every defect image has its mask
    assert len(test) == 2 + 2 * len(DEFECT_TYPES)
    assert cat.defect_types() == sorted(DEFECT_TYPES)
    for s in test:
        image = load_image(s.path)
        assert image.shape == (64, 64, 3)
        if s.label:
            raw = load_image(s.mask_path)
            assert set(np.unique(raw)) <= {0, 255}
            assert load_mask(s.mask_path, image.shape).any()
    # Same seed -> byte-identical files; another seed -> different data.
    make_synthetic_category(tmp_path / "b", category="gear", **kwargs)
    for s in test:
        assert s.path.read_bytes() == (tmp_path / "b" / "gear" / s.rel_path).read_bytes()
    make_synthetic_category(tmp_path / "c", category="gear", **{**kwargs, "seed": 4})
    other = MVTecCategory(tmp_path / "c", "gear").test_samples()
    assert any(s.path.read_bytes() != o.path.read_bytes() for s, o in zip(test, other, strict=True))
    # Per-image seeding: more training images leave the first ones unchanged.
    make_synthetic_category(tmp_path / "d", category="gear", **{**kwargs, "n_train": 4})
    first = "train/good/000.png"
    assert (tmp_path / "a" / "gear" / first).read_bytes() == (tmp_path / "d" / "gear" / first).read_bytes()


def test_make_synthetic_category_refuses_non_empty_unless_overwrite(tmp_path):
    kwargs = dict(n_train=2, n_test_good=1, n_test_per_defect=1, size=48)
    make_synthetic_category(tmp_path, **kwargs)
    with pytest.raises(CategoryExistsError, match=r"not empty \(pass overwrite=True") as err:
        make_synthetic_category(tmp_path, **kwargs)
    assert isinstance(err.value, DataError) and err.value.path == tmp_path / "widget"
    make_synthetic_category(tmp_path, overwrite=True, **{**kwargs, "n_train": 1})
    assert len(MVTecCategory(tmp_path, "widget").train_samples()) == 1  # stale files are gone
    with pytest.raises(ConfigError):
        make_synthetic_category(tmp_path / "x", n_train=0)


def test_cli_synth(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--category", "w", "--n-train", "2", "--n-test-good", "1"]
    args += ["--n-test-per-defect", "1", "--size", "48", "--seed", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "w") in out and "train/good: 2" in out and "test/stain: 1" in out
    cat = MVTecCategory(tmp_path, "w")
    fp = fingerprint(cat.test_samples())
    assert main(args) == 1  # folder exists: one-line error, no traceback, naming the flag to use
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and "overwrite=True" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(args + ["--overwrite"]) == 0
    assert fingerprint(cat.test_samples()) == fp

"""DRAEM-style pseudo-anomalies: Perlin noise, mask/image consistency, clean share, textures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_inspect.data.synth import render_part
from edge_inspect.errors import DataError, ImageError
from trainer import pseudo_anomaly
from trainer.pseudo_anomaly import PROCEDURAL_KINDS, PseudoAnomalyGenerator, perlin_noise_2d


@pytest.fixture(scope="module")
def part_images() -> list[np.ndarray]:
    return [render_part(np.random.default_rng(s), 96)[0] for s in range(4)]


@pytest.mark.parametrize("shape, res", [((100, 37), (8, 3)), ((64, 64), (4, 4)), ((33, 250), (1, 32))])
def test_perlin_shape_range_smoothness(shape, res):
    noise = perlin_noise_2d(shape, res, np.random.default_rng(0))
    assert noise.shape == shape and noise.dtype == np.float32
    assert np.abs(noise).max() <= 1.0 and noise.std() > 0.05
    # Continuous: neighbouring pixels differ by at most a cell's gradient step.
    step = 2.0 * max(res[0] / shape[0], res[1] / shape[1]) * 2**0.5 * 1.5
    assert np.abs(np.diff(noise, axis=0)).max() <= step
    assert np.abs(np.diff(noise, axis=1)).max() <= step


def test_perlin_zero_on_lattice_and_seeded():
    noise = perlin_noise_2d((64, 64), (4, 4), np.random.default_rng(1))
    assert np.allclose(noise[::16, ::16], 0.0, atol=1e-6)
    again = perlin_noise_2d((64, 64), (4, 4), np.random.default_rng(1))
    other = perlin_noise_2d((64, 64), (4, 4), np.random.default_rng(2))
    assert np.array_equal(noise, again) and not np.array_equal(noise, other)


def test_unchanged_outside_mask_changed_inside(part_images):
    gen = PseudoAnomalyGenerator(clean_fraction=0.0, seed=0)
    inside = []
    for i in range(24):
        image = part_images[i % len(part_images)]
        out, mask = gen(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert mask.shape == image.shape[:2] and mask.dtype == np.float32
        assert set(np.unique(mask)) == {0.0, 1.0}  # non-clean: never an empty mask
        assert np.array_equal(out[mask == 0], image[mask == 0])
        inside.append(np.abs(out.astype(np.int16) - image)[mask == 1].mean())
    assert np.mean(inside) > 15
    assert np.median(inside) > 5


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_clean_share(fraction):
    image = render_part(np.random.default_rng(0), 32)[0]
    gen = PseudoAnomalyGenerator(clean_fraction=fraction, seed=1)
    clean = 0
    for _ in range(200):
        out, mask = gen(image)
        if not mask.any():
            clean += 1
            assert np.array_equal(out, image) and out is not image
    assert abs(clean / 200 - fraction) < 0.1


def test_deterministic_with_seed(part_images):
    a = PseudoAnomalyGenerator(seed=5, clean_fraction=0.3)
    b = PseudoAnomalyGenerator(seed=5, clean_fraction=0.3)
    c = PseudoAnomalyGenerator(seed=6, clean_fraction=0.3)
    outs_a = [a(im) for im in part_images * 2]
    outs_b = [b(im) for im in part_images * 2]
    outs_c = [c(im) for im in part_images * 2]
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(outs_a, outs_b, strict=True)
    )
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(outs_a, outs_c, strict=True))
    a.reseed(5)
    assert np.array_equal(a(part_images[0])[0], outs_a[0][0])


def test_textures_dir_recursive_skips_unreadable(tmp_path, part_images):
    rng = np.random.default_rng(0)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for i, folder in enumerate([tmp_path, tmp_path / "sub", tmp_path / "sub" / "deeper"]):
        tex = rng.integers(0, 255, (40 + i * 10, 70, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"t{i}.png"), tex)
    (tmp_path / "zz_broken.png").write_bytes(b"\x89PNG not really")  # sorted last: found only when drawn
    (tmp_path / "readme.txt").write_text("ignored")
    gen = PseudoAnomalyGenerator(textures_dir=tmp_path, clean_fraction=0.0, seed=0)
    assert "folder" in gen.texture_source and "4 images" in gen.texture_source
    for _ in range(16):  # enough draws to hit the broken file and drop it
        out, mask = gen(part_images[0])
        assert mask.any() and np.array_equal(out[mask == 0], part_images[0][mask == 0])
    assert sorted(p.name for p in gen._paths) == ["t0.png", "t1.png", "t2.png"]


def test_bad_texture_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        PseudoAnomalyGenerator(textures_dir=tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        PseudoAnomalyGenerator(textures_dir=tmp_path)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="no readable images"):
        PseudoAnomalyGenerator(textures_dir=tmp_path)


def test_rejects_non_rgb_uint8_input():
    gen = PseudoAnomalyGenerator(seed=0)
    with pytest.raises(ImageError):
        gen(np.zeros((8, 8), np.uint8))
    with pytest.raises(ImageError):
        gen(np.zeros((8, 8, 3), np.float32))


def test_procedural_textures_without_scikit_image(monkeypatch, part_images):
    for kind in PROCEDURAL_KINDS:
        tex = pseudo_anomaly._procedural(kind, np.random.default_rng(0), 37, 53)
        assert tex.shape == (37, 53, 3) and tex.dtype == np.uint8 and tex.std() > 5, kind
    monkeypatch.setattr(pseudo_anomaly, "_skimage_photos", lambda: ())
    gen = PseudoAnomalyGenerator(clean_fraction=0.0, seed=3)
    assert "0 scikit-image" in gen.texture_source
    out, mask = gen(part_images[1])
    assert mask.any() and not np.array_equal(out, part_images[1])


def test_builtin_includes_scikit_image_photos_when_installed():
    pytest.importorskip("skimage")
    photos = pseudo_anomaly._skimage_photos()
    assert len(photos) >= 3  # brick, grass, gravel ship with the wheel
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in photos)


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def test_grey_images_get_grey_anomalies(part_images):
    gen = PseudoAnomalyGenerator(clean_fraction=0.0, seed=4)
    for image in part_images:
        out, _ = gen(_grey(image))
        assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])
    colour = PseudoAnomalyGenerator(clean_fraction=0.0, seed=4, match_grey=False)
    outs = [colour(_grey(image))[0] for image in part_images * 3]
    assert any(not np.array_equal(o[:, :, 0], o[:, :, 1]) for o in outs)


def test_self_textures_come_from_the_image_and_are_visible(part_images):
    """With self_fraction=1 no foreign texture is drawn, and every anomaly changes what it covers."""
    gen = PseudoAnomalyGenerator(clean_fraction=0.0, self_fraction=1.0, seed=2)
    gen._source_texture = lambda h, w: pytest.fail("a foreign texture was drawn")
    for i in range(12):
        image = part_images[i % len(part_images)]
        out, mask = gen(image)
        assert np.array_equal(out[mask == 0], image[mask == 0])
        assert np.abs(out.astype(np.int16) - image)[mask == 1].mean() > 2.0
    with pytest.raises(Exception, match="self_fraction"):
        PseudoAnomalyGenerator(self_fraction=1.5)


def test_line_anomalies_are_thin_cracks(part_images):
    """With line_fraction=1 every anomaly is a thin line: non-empty, long and narrow (not a blob)."""
    gen = PseudoAnomalyGenerator(clean_fraction=0.0, line_fraction=1.0, seed=5)
    blobs = PseudoAnomalyGenerator(clean_fraction=0.0, seed=5)
    for i in range(12):
        image = part_images[i % len(part_images)]
        out, mask = gen(image)
        assert mask.any() and np.array_equal(out[mask == 0], image[mask == 0])
        eroded = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8))
        assert eroded.sum() <= 0.1 * mask.sum()  # at most 3 px wide: a 5x5 erosion leaves (almost) nothing
        ys, xs = np.nonzero(mask)
        assert max(np.ptp(ys), np.ptp(xs)) >= 5  # a line, not a dot
    blob_masks = [blobs(im)[1].astype(np.uint8) for im in part_images * 3]
    assert any(cv2.erode(m, np.ones((5, 5), np.uint8)).sum() > 0.1 * m.sum() for m in blob_masks)
    with pytest.raises(Exception, match="line_fraction"):
        PseudoAnomalyGenerator(line_fraction=-0.1)

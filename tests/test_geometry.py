"""edge_inspect.geometry: letterbox forward / inverse with masks, tile grids, stitching, the default shape rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.geometry import (
    choose_input_shape,
    crop_content,
    cut_tiles,
    fit_image,
    fit_mask,
    overlap_pixels,
    place,
    stitch,
    tile_grid,
    to_image_frame,
)


def test_stretch_fills_the_input_and_letterbox_keeps_the_aspect_centred():
    assert place((500, 1240), (64, 160), "stretch").is_full
    p = place((500, 1000), (64, 160), "letterbox")  # aspect 2.0 into 2.5: full height, padded left/right
    assert (p.top, p.height) == (0, 64) and p.width == 128 and p.left == 16
    p = place((300, 300), (64, 160), "letterbox")
    assert (p.height, p.width, p.top, p.left) == (64, 64, 0, 48)
    p = place((100, 1000), (64, 160), "letterbox")  # wider than the input: full width, padded above/below
    assert (p.width, p.left, p.height, p.top) == (160, 0, 16, 24)
    with pytest.raises(ValueError, match="unknown fit"):
        place((10, 10), (32, 32), "crop")


def test_letterbox_placement_does_not_depend_on_the_images_scale():
    assert place((100, 200), (64, 160), "letterbox") == place((100, 200), (64, 160), "letterbox")
    a, b = place((100, 200), (64, 160), "letterbox"), place((300, 600), (64, 160), "letterbox")
    assert (a.top, a.left, a.height, a.width) == (b.top, b.left, b.height, b.width)


def test_fit_image_pads_with_the_constant_and_the_mask_lands_where_its_image_does():
    image = np.full((50, 100, 3), 200, np.uint8)
    image[20:30, 40:60] = 10  # a dark defect
    mask = np.zeros((50, 100), np.uint8)
    mask[20:30, 40:60] = 255
    out, p = fit_image(image, (64, 160), "letterbox", pad_value=7)
    assert out.shape == (64, 160, 3) and out.dtype == np.uint8
    assert (out[:, : p.left] == 7).all() and (out[:, p.left + p.width :] == 7).all()
    m = fit_mask(mask, p)
    assert m.shape == (64, 160) and m.dtype == bool
    assert not m[:, : p.left].any() and not m[:, p.left + p.width :].any()  # never in the padding
    # the mask covers the (dark) defect in the fitted image: all but its bilinear-blended border
    outside = crop_content(out[..., 0], p)[~crop_content(m, p)]
    assert (out[m][:, 0] < 100).mean() > 0.75 and (outside > 100).mean() > 0.99
    ys, xs = np.nonzero(m)
    # defect centre at (25, 50) of a 50x100 image → model pixels: scale 64/50 = 1.28, offset left
    assert abs(ys.mean() - 25 * 1.28) < 1.5 and abs(xs.mean() - (p.left + 50 * 1.28)) < 1.5


def test_crop_content_and_to_image_frame_invert_the_placement():
    p = place((50, 100), (64, 160), "letterbox")
    model_map = np.zeros((64, 160), np.float32)
    model_map[p.top : p.top + p.height, p.left : p.left + p.width] = 1.0
    crop = crop_content(model_map, p)
    assert crop.shape == (p.height, p.width) and (crop == 1.0).all()
    # a map at stride 4 (16x40) crops to the same part of the image
    assert crop_content(np.zeros((1, 1, 16, 40)), p).shape == (1, 1, 16, 32)
    back = to_image_frame(model_map, p)
    assert back.shape == (50, 100) and np.allclose(back, 1.0)
    stretched = place((50, 100), (64, 160), "stretch")
    assert crop_content(model_map, stretched) is model_map


def test_mask_through_letterbox_and_back_matches_the_original():
    rng = np.random.default_rng(0)
    mask = np.zeros((120, 240), np.uint8)
    for _ in range(5):
        y, x = rng.integers(0, 100), rng.integers(0, 220)
        mask[y : y + 20, x : x + 20] = 1
    p = place(mask.shape, (64, 160), "letterbox")
    fitted = fit_mask(mask, p).astype(np.float32)
    back = to_image_frame(fitted, p) > 0.5
    agreement = (back == (mask > 0)).mean()
    assert agreement > 0.97  # only a border pixel or two per blob moves through the 0.53x resize


@pytest.mark.parametrize("overlap, expected", [(0.25, 16), (16, 16), (0, 0), (0.999, 63), (500, 63)])
def test_overlap_is_a_fraction_or_pixels(overlap, expected):
    assert overlap_pixels(overlap, 64) == expected


def test_tile_grid_covers_the_image_and_keeps_tiles_inside():
    grid = tile_grid((500, 1240), (256, 256), 0.25)
    ys = sorted({y for y, _ in grid.origins})
    xs = sorted({x for _, x in grid.origins})
    assert ys == [0, 192, 244] and xs[0] == 0 and xs[-1] == 1240 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(xs, xs[1:], strict=False))  # at least the asked overlap
    covered = np.zeros((500, 1240), bool)
    for y, x in grid.origins:
        covered[y : y + 256, x : x + 256] = True
    assert covered.all() and len(grid) == len(ys) * len(xs)
    small = tile_grid((40, 90), (64, 160), 0.25)  # smaller than one tile: one, padded
    assert small.origins == ((0, 0),)


def test_cut_tiles_pads_beyond_the_image():
    image = np.arange(40 * 90, dtype=np.float32).reshape(40, 90)
    tiles = cut_tiles(image, tile_grid((40, 90), (64, 160), 0.25), pad_value=-1)
    assert tiles.shape == (1, 64, 160)
    assert np.array_equal(tiles[0, :40, :90], image) and (tiles[0, 40:] == -1).all()


def test_stitching_tiles_of_a_map_gives_the_map_back():
    rng = np.random.default_rng(1)
    full = rng.random((130, 300)).astype(np.float32)
    grid = tile_grid(full.shape, (64, 96), 0.3)
    assert len(grid) > 4
    # each tile's map is the full map's piece (what a translation-equivariant model gives)
    assert np.allclose(stitch(cut_tiles(full, grid), grid), full)
    # overlaps are averaged: tiles reporting their own index give the mean index where they overlap
    index_maps = np.stack([np.full((64, 96), i, np.float32) for i in range(len(grid))])
    stitched = stitch(index_maps, grid)
    y0, x0 = grid.origins[1]
    assert stitched[0, x0] == pytest.approx(0.5)  # column covered by tiles 0 and 1 only
    with pytest.raises(ValueError):
        stitch(index_maps[:-1], grid)


def test_one_tile_stitches_to_the_tile_cropped_to_the_image():
    grid = tile_grid((50, 120), (64, 160), 0.25)
    tile_map = np.random.default_rng(2).random((1, 64, 160)).astype(np.float32)
    assert np.array_equal(stitch(tile_map, grid), tile_map[0, :50, :120])


def test_default_shape_rule():
    assert choose_input_shape([1.0, 0.9, 1.2])[:2] == ((256, 256), "stretch")
    (h, w), fit, why = choose_input_shape([1240 / 500] * 10)
    assert fit == "letterbox" and h % 32 == 0 and w % 32 == 0
    assert abs(w / h - 2.48) < 0.3 and 0.85 < h * w / 256**2 < 1.15
    assert "2.48" in why and "letterbox" in why
    (h, w), fit, _ = choose_input_shape([0.4] * 3)  # tall parts
    assert h > w and fit == "letterbox"

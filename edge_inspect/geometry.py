"""Where a camera image sits in the model input, and back: stretch, letterbox, tiles. numpy/OpenCV only.

One module owns this math so training (images and masks), eval, predict and the line place an image
identically. Three ways an image of (H, W) pixels meets a model input of (h, w):

- ``stretch``: the whole image resized to (h, w); the aspect ratio is not kept (schema 1-3 behaviour).
- ``letterbox``: resized by one factor s = min(h/H, w/W) to fit, centred, the rest padded with a constant.
  A map comes back in the image frame by cropping the padding (``crop_content``): the crop has the
  image's aspect ratio, so one factor per axis maps its pixels to image pixels.
- tiles: the image at its own resolution cut into overlapping (h, w) tiles (``tile_grid``); the tile maps
  are stitched back (``stitch``) into one (H, W) map, averaged where tiles overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Fit = Literal["stretch", "letterbox"]


@dataclass(frozen=True)
class Placement:
    """Where an image of ``image_hw`` (H, W) lies inside a model input of ``input_hw`` (h, w), in input
    pixels: rows top..top+height, columns left..left+width. Stretch fills the whole input."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    top: int
    left: int
    height: int
    width: int

    @property
    def is_full(self) -> bool:
        return (self.top, self.left, self.height, self.width) == (0, 0, *self.input_hw)


def place(image_hw: tuple[int, int], input_hw: tuple[int, int], fit: Fit) -> Placement:
    """The placement of an (H, W) image in an (h, w) input under ``fit``.

    Letterbox: content (round(H·s), round(W·s)) with s = min(h/H, w/W), at least one pixel, centred (the
    odd pixel of padding goes below / right). Depends only on the two shapes, so the image's scale does
    not move the content as long as its aspect ratio stays.
    """
    (ih, iw), (h, w) = (int(v) for v in image_hw), (int(v) for v in input_hw)
    if ih <= 0 or iw <= 0 or h <= 0 or w <= 0:
        raise ValueError(f"shapes must be positive, got image {image_hw} and input {input_hw}")
    if fit == "stretch":
        return Placement((ih, iw), (h, w), 0, 0, h, w)
    if fit != "letterbox":
        raise ValueError(f"unknown fit {fit!r}; choose stretch or letterbox")
    s = min(h / ih, w / iw)
    ch, cw = min(h, max(1, round(ih * s))), min(w, max(1, round(iw * s)))
    return Placement((ih, iw), (h, w), (h - ch) // 2, (w - cw) // 2, ch, cw)


def fit_image(image: np.ndarray, input_hw: tuple[int, int], fit: Fit, pad_value: int = 0,
              interpolation: int | None = None) -> tuple[np.ndarray, Placement]:
    """(H, W[, C]) image → ((h, w[, C]) same dtype, its Placement). Padding is ``pad_value`` in every channel."""
    import cv2

    p = place(image.shape[:2], input_hw, fit)
    interp = cv2.INTER_LINEAR if interpolation is None else interpolation
    content = image if image.shape[:2] == (p.height, p.width) else cv2.resize(
        image, (p.width, p.height), interpolation=interp)
    if p.is_full:
        return np.ascontiguousarray(content), p
    out = np.full((*p.input_hw, *image.shape[2:]), pad_value, dtype=image.dtype)
    out[p.top : p.top + p.height, p.left : p.left + p.width] = content.reshape(p.height, p.width, *image.shape[2:])
    return out, p


def fit_mask(mask: np.ndarray, placement: Placement) -> np.ndarray:
    """(H, W) mask → (h, w) bool in the model input, placed like its image: nearest resize, padding False."""
    import cv2

    p = placement
    m = np.asarray(mask).astype(np.uint8)
    if m.shape != (p.height, p.width):
        m = cv2.resize(m, (p.width, p.height), interpolation=cv2.INTER_NEAREST)
    out = np.zeros(p.input_hw, bool)
    out[p.top : p.top + p.height, p.left : p.left + p.width] = m > 0
    return out


def crop_content(maps: np.ndarray, placement: Placement) -> np.ndarray:
    """The image's part of maps (..., h', w') at any resolution proportional to the input's (model
    resolution, or a map downsampled by a whole stride): padding cropped off. Stretch: unchanged."""
    p = placement
    if p.is_full:
        return maps
    mh, mw = maps.shape[-2:]
    fy, fx = mh / p.input_hw[0], mw / p.input_hw[1]
    top, left = int(round(p.top * fy)), int(round(p.left * fx))
    bottom = max(top + 1, int(round((p.top + p.height) * fy)))
    right = max(left + 1, int(round((p.left + p.width) * fx)))
    return maps[..., top:bottom, left:right]


def to_image_frame(amap: np.ndarray, placement: Placement) -> np.ndarray:
    """(h, w) map at model resolution → (H, W) float32 map over the original image (padding cropped,
    bilinear resize)."""
    import cv2

    content = np.ascontiguousarray(crop_content(np.asarray(amap, np.float32), placement))
    H, W = placement.image_hw
    if content.shape == (H, W):
        return content
    return cv2.resize(content, (W, H), interpolation=cv2.INTER_LINEAR)


# ---- tiles ----


def overlap_pixels(overlap: float, tile: int) -> int:
    """Overlap in pixels from a fraction of the tile side (< 1) or a pixel count (≥ 1); at most tile − 1."""
    if overlap < 0 or not math.isfinite(overlap):
        raise ValueError(f"tile overlap must be ≥ 0, got {overlap}")
    px = int(round(overlap * tile)) if overlap < 1 else int(round(overlap))
    return min(px, tile - 1)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile − overlap, the last tile flush with the end (its overlap
    grows instead of running past the image). An axis shorter than the tile gets one tile at 0."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(n)]
    return sorted(set(starts))


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile_hw`` covering an image of ``image_hw`` at its own resolution; ``origins`` (y, x) of
    each tile's top-left corner, row by row. Where the image is smaller than a tile, the tile is padded."""

    image_hw: tuple[int, int]
    tile_hw: tuple[int, int]
    origins: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.origins)


def tile_grid(image_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float) -> TileGrid:
    """The overlapping tile grid of an (H, W) image for (h, w) tiles; ``overlap`` as in overlap_pixels."""
    (H, W), (th, tw) = (int(v) for v in image_hw), (int(v) for v in tile_hw)
    if min(H, W, th, tw) <= 0:
        raise ValueError(f"shapes must be positive, got image {image_hw} and tile {tile_hw}")
    ys = _starts(H, th, overlap_pixels(overlap, th))
    xs = _starts(W, tw, overlap_pixels(overlap, tw))
    return TileGrid((H, W), (th, tw), tuple((y, x) for y in ys for x in xs))


def cut_tiles(image: np.ndarray, grid: TileGrid, pad_value: int = 0) -> np.ndarray:
    """(H, W[, C]) image → (n, h, w[, C]) tiles of ``grid``; parts beyond the image are ``pad_value``."""
    th, tw = grid.tile_hw
    out = np.full((len(grid), th, tw, *image.shape[2:]), pad_value, dtype=image.dtype)
    for i, (y, x) in enumerate(grid.origins):
        patch = image[y : y + th, x : x + tw]
        out[i, : patch.shape[0], : patch.shape[1]] = patch
    return out


def stitch(tile_maps: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(n, h, w) tile maps → (H, W) float32 map of the image: each pixel the mean of the tiles covering it."""
    tile_maps = np.asarray(tile_maps, np.float32)
    if tile_maps.shape != (len(grid), *grid.tile_hw):
        raise ValueError(f"expected {len(grid)} tile maps of {grid.tile_hw}, got {tile_maps.shape}")
    H, W = grid.image_hw
    acc = np.zeros((H, W), np.float64)
    count = np.zeros((H, W), np.float64)
    for m, (y, x) in zip(tile_maps, grid.origins, strict=True):
        part = m[: H - y, : W - x]
        acc[y : y + part.shape[0], x : x + part.shape[1]] += part
        count[y : y + part.shape[0], x : x + part.shape[1]] += 1
    return (acc / count).astype(np.float32)


# ---- choosing an input shape ----

NEAR_SQUARE = 1.25  # median aspect within [1/1.25, 1.25]: keep the square input and stretch


def choose_input_shape(aspects: list[float], budget: int = 256 * 256, multiple: int = 32) -> tuple[
        tuple[int, int], Fit, str]:
    """((h, w), fit, why) for images with width/height ratios ``aspects``: near-square (median within
    NEAR_SQUARE of 1) keeps a square input of ``budget`` pixels and stretches; otherwise h, w are multiples of
    ``multiple`` with about ``budget`` pixels and the median aspect ratio, letterboxed."""
    if not aspects:
        raise ValueError("no image aspect ratios given")
    r = float(np.median(aspects))
    side = int(round(math.sqrt(budget) / multiple)) * multiple
    if 1 / NEAR_SQUARE <= r <= NEAR_SQUARE:
        return (side, side), "stretch", (f"median aspect (width/height) {r:.2f} of {len(aspects)} images is near "
                                         f"square: {side}x{side}, stretched")
    h = max(multiple, int(round(math.sqrt(budget / r) / multiple)) * multiple)
    w = max(multiple, int(round(math.sqrt(budget * r) / multiple)) * multiple)
    return (h, w), "letterbox", (f"median aspect (width/height) {r:.2f} of {len(aspects)} images: {h}x{w} "
                                 f"(height x width, about {side}² pixels at that aspect), letterboxed")

"""Camera image → network input and backend outputs → the image's frame, numpy/OpenCV only.

The same functions serve training, eval, predict and the line; the geometry lives in edge_inspect.geometry.
"""

from __future__ import annotations

import numpy as np

from .errors import BackendError, ImageError
from .geometry import crop_content, cut_tiles, fit_image, place, stitch, tile_grid
from .manifest import InputSpec, Manifest


def to_rgb8(image: np.ndarray, channel_order: str = "BGR") -> np.ndarray:
    """Normalise any supported camera image to (H, W, 3) uint8 RGB.

    Accepts (H, W) or (H, W, 1) mono, (H, W, 3) colour in ``channel_order``, (H, W, 4) with alpha;
    uint8 as is, uint16 scaled by its bit depth (>> 8), float in [0, 1]. Anything else: ImageError.
    """
    import cv2

    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageError("image is empty or not an array")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # 16-bit industrial images: keep the top 8 bits
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ImageError("float image contains NaN or inf")
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported image dtype {image.dtype}; expected uint8, uint16 or float")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"unsupported image shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if channel_order.upper() == "BGR":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def preprocess(image: np.ndarray, spec: InputSpec, channel_order: str = "BGR") -> np.ndarray:
    """(H, W[, C]) camera image → (n, 3, spec.height, spec.width) float32, normalised per the manifest.

    n is 1 unless the spec tiles the image (then one row per tile of geometry.tile_grid). The image is
    placed per ``spec.fit`` (edge_inspect.geometry): stretched whole (aspect not kept, so the score does not
    depend on the original size) or letterboxed (aspect kept, padded with ``spec.pad_value``). The backend
    outputs of this input go through ``restore_outputs`` to come back in the image's frame.
    """
    rgb = to_rgb8(image, channel_order)
    if spec.tiles is not None:
        grid = tile_grid(rgb.shape[:2], spec.hw, spec.tiles.overlap)
        return _normalise(cut_tiles(rgb, grid, spec.pad_value), spec)
    fitted, _ = fit_image(rgb, spec.hw, spec.fit, spec.pad_value, interpolation(spec))
    return _normalise(fitted[None], spec)


def interpolation(spec: InputSpec) -> int:
    """The OpenCV interpolation flag of ``spec.resize`` (training places its images with the same one)."""
    import cv2

    return cv2.INTER_AREA if spec.resize == "area" else cv2.INTER_LINEAR


def _normalise(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(n, h, w, 3) uint8 RGB → (n, 3, h, w) float32: channel order, scale, mean/std of the spec."""
    if spec.channel_order == "BGR":
        rgb = rgb[..., ::-1]
    x = rgb.astype(np.float32) * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def input_count(image_hw: tuple[int, int], spec: InputSpec) -> int:
    """Rows ``preprocess`` makes for an image of (H, W): its tile count, or 1."""
    return len(tile_grid(image_hw, spec.hw, spec.tiles.overlap)) if spec.tiles is not None else 1


def split_outputs(outputs: dict, counts: list[int]) -> list[dict]:
    """Backend outputs of several images' inputs concatenated along the batch ((Σcounts, ...) each) →
    one dict per image with its ``counts[i]`` rows."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(counts) else 0
    parts: list[dict] = [{} for _ in counts]
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] != total:
            raise BackendError(f"output '{name}' has {arr.shape[0] if arr.ndim else 0} rows for {total} inputs")
        for i, piece in enumerate(np.split(arr, ends[:-1])):
            parts[i][name] = piece
    return parts


def restore_outputs(outputs: dict, image_hw: tuple[int, int], manifest: Manifest) -> dict:
    """Backend outputs of ONE image's ``preprocess`` rows → that image's outputs in its own frame.

    Stretch: unchanged (maps (1, 1, h, w) at model resolution; one factor per axis maps them to the image).
    Letterbox: every map (1, 1, h, w) cropped to the image's content (geometry.crop_content), so it has the
    image's aspect ratio and padding never reaches a region, a heat map or a pixel metric.
    Tiles: maps (n, 1, h, w) stitched into (1, 1, H, W) at image resolution (mean where tiles overlap);
    the score is the max over the tiles' scores, and every other per-row output (e.g. ``global_score``)
    is the one of that tile, so a fused score still splits into its map and image-level parts.
    """
    spec = manifest.input
    if spec.tiles is None:
        placement = place(image_hw, spec.hw, spec.fit)
        if placement.is_full:
            return outputs
        return {k: crop_content(np.asarray(v), placement) if np.ndim(v) == 4 else v for k, v in outputs.items()}
    grid = tile_grid(image_hw, spec.hw, spec.tiles.overlap)
    scores = np.asarray(outputs[manifest.score_output]).reshape(-1)
    if scores.size != len(grid):
        raise BackendError(f"{scores.size} scores for the {len(grid)} tiles of a {image_hw[0]}x{image_hw[1]} image")
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    restored = {}
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.ndim == 4:
            restored[name] = stitch(_at_tile_size(arr[:, 0], spec.hw), grid)[None, None]
        elif arr.ndim >= 1 and arr.shape[0] == len(grid):
            restored[name] = arr[best : best + 1] if name != manifest.score_output else scores[best : best + 1]
        else:
            restored[name] = arr
    return restored


def _at_tile_size(maps: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
    """(n, h', w') maps → (n, *tile_hw), bilinear, for outputs below the model resolution."""
    import cv2

    if maps.shape[1:] == tuple(tile_hw):
        return maps
    return np.stack([cv2.resize(np.asarray(m, np.float32), tile_hw[::-1], interpolation=cv2.INTER_LINEAR)
                     for m in maps])

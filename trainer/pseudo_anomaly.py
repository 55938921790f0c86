"""Pseudo-anomalies for stage 2 in DRAEM's manner (numpy/OpenCV only; the trainer wraps it for torch).

A Perlin-noise mask (noise resolution 2^a x 2^b cells, a, b random, threshold 0.5, random rotation)
is filled with a foreign texture blended into the good image:

    aug = (1 - m) * img + m * ((1 - beta) * texture + beta * img),   beta ~ U[beta_range)

A share ``clean_fraction`` of the samples is returned unchanged with an all-zero mask. A share
``self_fraction`` of the anomalies takes its texture from the image itself (a jittered crop from
elsewhere, as CutPaste and NSA do): defects that look like the part's own surface, only displaced,
darker or brighter. A share ``line_fraction`` of the anomalies replaces the Perlin blob with a thin
crack-like polyline (1-3 px wide), the defect shape blobs never teach. When the good image is grey (all
channels equal), textures are made grey too: a monochrome camera cannot produce colour defects, so
colour must not be the cue that gives them away.

Textures come from a folder the user names (any images, searched recursively, e.g. DTD) or, without
one, from a built-in offline source: procedural textures (noise, stripes, checks, blobs, marble)
and, when scikit-image is installed, its bundled photos (brick, grass, gravel, ...). Every texture
gets a random crop, flip and brightness/contrast/colour jitter plus two more random photometric ops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edge_inspect.data.mvtec import IMAGE_EXTENSIONS, load_image
from edge_inspect.errors import ConfigError, DataError, ImageError

log = logging.getLogger(__name__)

# scikit-image photos bundled with the wheel (no download): textures first, then texture-rich scenes.
SKIMAGE_TEXTURES = (
    "brick",
    "grass",
    "gravel",
    "moon",
    "coffee",
    "immunohistochemistry",
    "hubble_deep_field",
    "chelsea",
    "rocket",
    "coins",
    "cell",
)
PROCEDURAL_KINDS = ("noise", "stripes", "checks", "blobs", "marble")
_MAX_TEXTURE_SIDE = 512  # folder textures are downscaled to this on load (cheaper crops, smaller cache)
_MASK_TRIES = 20
_TEXTURE_TRIES = 5
_MIN_MEAN_CHANGE = 8.0  # grey levels, mean |change| inside the mask


# ----------------------------------------------------------------------------------------------------
# Perlin noise


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic interpolant 6t^5 - 15t^4 + 10t^3 (zero 1st and 2nd derivative at 0 and 1)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _lattice(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel along one axis: lattice cell index (n,) int and position inside the cell (n,) in [0, 1)."""
    # A padded grid of ceil(n / cells) pixels per cell, cropped to n: cells stay square-ish and the
    # lattice needs no fractional cell size.
    per_cell = -(-n // cells)
    pos = np.arange(n)
    return pos // per_cell, (pos % per_cell).astype(np.float32) / np.float32(per_cell)


def perlin_noise_2d(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise of ``shape`` (H, W) with ``res`` (rows, cols) lattice cells over a padded
    grid (H and W need not be multiples of res). Returns (H, W) float32 in [-1, 1] (scaled by sqrt 2,
    as DRAEM does, so a threshold of 0.5 keeps its meaning). Lattice points are 0."""
    h, w = int(shape[0]), int(shape[1])
    ry, rx = int(res[0]), int(res[1])
    if h < 1 or w < 1 or ry < 1 or rx < 1:
        raise ConfigError(f"perlin_noise_2d needs positive shape and res, got shape={shape} res={res}")
    cell_y, ty = _lattice(h, ry)
    cell_x, tx = _lattice(w, rx)
    angles = rng.uniform(0.0, 2.0 * math.pi, size=(ry + 1, rx + 1))
    grad_x = np.cos(angles).astype(np.float32)
    grad_y = np.sin(angles).astype(np.float32)
    rows, cols = cell_y[:, None], cell_x[None, :]
    fy, fx = ty[:, None], tx[None, :]

    def corner(oy: int, ox: int) -> np.ndarray:
        # Dot product of the corner's gradient with the offset from that corner to the pixel.
        return grad_x[rows + oy, cols + ox] * (fx - ox) + grad_y[rows + oy, cols + ox] * (fy - oy)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0)
    top += u * (corner(0, 1) - top)
    bottom = corner(1, 0)
    bottom += u * (corner(1, 1) - bottom)
    top += v * (bottom - top)
    top *= np.float32(math.sqrt(2.0))
    return np.clip(top, -1.0, 1.0, out=top)


# ----------------------------------------------------------------------------------------------------
# Built-in textures


@lru_cache(maxsize=1)
def _skimage_photos() -> tuple[np.ndarray, ...]:
    """scikit-image's bundled photos as (H, W, 3) uint8 RGB; empty when scikit-image is missing."""
    try:
        import skimage.data as skdata
    except ImportError:
        log.info("scikit-image not installed: built-in textures are procedural only")
        return ()
    photos = []
    for name in SKIMAGE_TEXTURES:
        try:
            img = np.asarray(getattr(skdata, name)())
        except Exception as exc:  # noqa: BLE001 - a photo needing a download (pooch, network) or absent in this version
            log.debug("skimage.data.%s unavailable: %s", name, exc)
            continue
        if img.dtype != np.uint8:
            continue
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        photos.append(np.ascontiguousarray(img[:, :, :3]))
    return tuple(photos)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _two_tone(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a (H, W) field in [0, 1] to RGB between two random colours -> (H, W, 3) uint8."""
    a, b = _colour(rng), _colour(rng)
    out = a + field[:, :, None] * (b - a)
    return np.clip(out, 0, 255).astype(np.uint8)


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    coarse = rng.uniform(0, 1, size=(cells, cells, channels)).astype(np.float32)
    out = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def _procedural(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A procedural texture (H, W, 3) uint8."""
    if kind == "noise":  # coloured multi-octave value noise
        out = np.zeros((h, w, 3), np.float32)
        for octave in range(4):
            cells = int(rng.integers(2, 5)) * 2**octave
            out += _value_noise(rng, h, w, cells, 3) * (0.5**octave)
        out -= out.min()
        out *= 255.0 / max(float(out.max()), 1e-6)
        return out.astype(np.uint8)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    if kind == "stripes":  # oriented stripes, slightly wavy
        period = rng.uniform(4, 40)
        warp = (_value_noise(rng, h, w, 4, 1)[:, :, 0] - 0.5) * rng.uniform(0, 2 * period)
        field = 0.5 + 0.5 * np.sin((x * c + y * s + warp) * (2 * math.pi / period))
        return _two_tone(field ** rng.uniform(0.3, 3.0), rng)
    if kind == "checks":  # rotated checkerboard with soft edges
        period = rng.uniform(6, 48)
        u, v = x * c + y * s, -x * s + y * c
        field = np.sin(u * (math.pi / period)) * np.sin(v * (math.pi / period))
        return _two_tone(np.clip(field * rng.uniform(2, 20) * 0.5 + 0.5, 0, 1), rng)
    if kind == "blobs":  # thresholded smooth noise, three colours
        field = _value_noise(rng, h, w, int(rng.integers(3, 12)), 1)[:, :, 0]
        lo, hi = np.quantile(field, [0.33, 0.66])
        palette = np.stack([_colour(rng) for _ in range(3)])
        return palette[(field > lo).astype(int) + (field > hi)].astype(np.uint8)
    if kind == "marble":  # fractal Perlin noise through a sine ramp
        field = np.zeros((h, w), np.float32)
        for octave in range(4):
            res = 2 ** (octave + 1)
            field += perlin_noise_2d((h, w), (res, res), rng) * (0.5**octave)
        field = 0.5 + 0.5 * np.sin((x * c + y * s) * rng.uniform(0.02, 0.1) + field * rng.uniform(3, 10))
        return _two_tone(field, rng)
    raise ConfigError(f"unknown procedural texture kind {kind!r}")


# ----------------------------------------------------------------------------------------------------
# Texture augmentation (photometric ops on uint8 RGB via lookup tables where possible)


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(table, 0, 255).astype(np.uint8))


_LEVELS = np.arange(256, dtype=np.float32)


def _brightness_contrast_colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast around mid grey, brightness offset and per-channel colour gains."""
    contrast = rng.uniform(0.6, 1.5)
    brightness = rng.uniform(-40, 40)
    gains = rng.uniform(0.7, 1.3, size=3)
    out = np.empty_like(img)
    for ch in range(3):
        table = ((_LEVELS - 128.0) * contrast + 128.0 + brightness) * gains[ch]
        out[:, :, ch] = _lut(img[:, :, ch], table)
    return out


def _gamma(img, rng):
    return _lut(img, 255.0 * (_LEVELS / 255.0) ** rng.uniform(0.5, 2.0))


def _hue_saturation(img, rng):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hue = (hsv[:, :, 0].astype(np.int16) + int(rng.integers(-25, 26))) % 180  # OpenCV hue: 0..179
    hsv[:, :, 0] = hue.astype(np.uint8)
    hsv[:, :, 1] = _lut(hsv[:, :, 1], _LEVELS + rng.uniform(-50, 50))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _solarize(img, rng):
    threshold = rng.uniform(32, 128)
    return _lut(img, np.where(_LEVELS >= threshold, 255.0 - _LEVELS, _LEVELS))


def _posterize(img, rng):
    bits = int(rng.integers(2, 6))
    mask = (0xFF << (8 - bits)) & 0xFF
    return np.bitwise_and(img, np.uint8(mask))


def _invert(img, rng):
    return 255 - img


def _autocontrast(img, rng):
    lo = img.reshape(-1, 3).min(axis=0).astype(np.float32)
    hi = img.reshape(-1, 3).max(axis=0).astype(np.float32)
    scale = 255.0 / np.maximum(hi - lo, 1.0)
    return np.clip((img.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)


def _equalize(img, rng):
    return cv2.merge([cv2.equalizeHist(np.ascontiguousarray(img[:, :, ch])) for ch in range(3)])


def _sharpen(img, rng):
    amount = rng.uniform(0.5, 2.0)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.0)
    return cv2.addWeighted(img, 1.0 + amount, blurred, -amount, 0)


_EXTRA_OPS: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (
    _gamma,
    _hue_saturation,
    _solarize,
    _posterize,
    _invert,
    _autocontrast,
    _equalize,
    _sharpen,
)


def _random_crop_resize(src: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random crop (30-100 % of the short side, the target's aspect), flip, resized to (h, w, 3)."""
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.3, 1.0)
    ch = max(1, int(min(sh, sw * h / w) * scale))
    cw = max(1, int(ch * w / h))
    cw = min(cw, sw)
    y0 = int(rng.integers(0, sh - ch + 1))
    x0 = int(rng.integers(0, sw - cw + 1))
    crop = src[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------------
# Generator


def _is_grey(image: np.ndarray) -> bool:
    """True when an (H, W, 3) image has three identical channels (a monochrome camera's frame)."""
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]))


def _find_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


class PseudoAnomalyGenerator:
    """Turns a good image into a (pseudo-anomalous image, mask) pair for discriminator training.

    Call with an (H, W, 3) uint8 RGB image; returns the augmented (H, W, 3) uint8 image and an (H, W)
    float32 mask in {0, 1}. Outside the mask the output equals the input exactly; a non-clean sample
    always has a non-empty mask. Seeded generators are deterministic; in torch DataLoader workers call
    ``reseed(base_seed + worker_id)`` so workers do not repeat each other.
    """

    def __init__(
        self,
        textures_dir: str | Path | None = None,
        clean_fraction: float = 0.5,
        beta_range: tuple[float, float] = (0.0, 0.8),
        perlin_scale_range: tuple[int, int] = (0, 5),
        threshold: float = 0.5,
        seed: int | None = None,
        rotate: bool = True,
        cache_mb: float = 512.0,
        self_fraction: float = 0.0,
        match_grey: bool = True,
        line_fraction: float = 0.0,
    ):
        if not 0.0 <= clean_fraction <= 1.0:
            raise ConfigError(f"clean_fraction must be in [0, 1], got {clean_fraction}")
        if not 0.0 <= self_fraction <= 1.0:
            raise ConfigError(f"self_fraction must be in [0, 1], got {self_fraction}")
        if not 0.0 <= line_fraction <= 1.0:
            raise ConfigError(f"line_fraction must be in [0, 1], got {line_fraction}")
        lo, hi = beta_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"beta_range must satisfy 0 <= low <= high <= 1, got {beta_range}")
        smin, smax = (int(v) for v in perlin_scale_range)
        if not 0 <= smin <= smax <= 10:
            raise ConfigError(f"perlin_scale_range must satisfy 0 <= a <= b <= 10, got {perlin_scale_range}")
        if not -1.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (-1, 1), got {threshold}")
        self.clean_fraction = float(clean_fraction)
        self.self_fraction = float(self_fraction)
        self.line_fraction = float(line_fraction)
        self.match_grey = bool(match_grey)
        self.beta_range = (float(lo), float(hi))
        self.perlin_scale_range = (smin, smax)
        self.threshold = float(threshold)
        self.rotate = rotate
        self.rng = np.random.default_rng(seed)
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_budget = int(cache_mb * 2**20)
        self.textures_dir = Path(textures_dir) if textures_dir is not None else None
        self._paths: list[Path] = []
        if self.textures_dir is not None:
            self._init_folder(self.textures_dir)

    def _init_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DataError(f"texture folder {folder} does not exist or is not a folder")
        self._paths = _find_images(folder)
        if not self._paths:
            raise DataError(f"texture folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        # Prove at least one is readable now rather than mid-training; later failures drop the file.
        for path in list(self._paths):
            try:
                self._load(path)
                break
            except ImageError as exc:
                log.warning("skipping texture: %s", exc)
                self._paths.remove(path)
        if not self._paths:
            raise DataError(f"texture folder {folder} contains no readable images")
        log.info("pseudo-anomaly textures: %d images under %s", len(self._paths), folder)

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream (e.g. per DataLoader worker)."""
        self.rng = np.random.default_rng(seed)

    @property
    def texture_source(self) -> str:
        """Human-readable description of the texture source (for logs/provenance)."""
        if self.textures_dir is not None:
            return f"folder {self.textures_dir} ({len(self._paths)} images)"
        n_photos = len(_skimage_photos())
        return f"built-in: {len(PROCEDURAL_KINDS)} procedural kinds + {n_photos} scikit-image photos"

    # -- textures -------------------------------------------------------------------------------------

    def _load(self, path: Path) -> np.ndarray:
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        img = load_image(path)
        side = max(img.shape[:2])
        if side > _MAX_TEXTURE_SIDE:
            f = _MAX_TEXTURE_SIDE / side
            img = cv2.resize(
                img,
                (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                interpolation=cv2.INTER_AREA,
            )
        if img.nbytes <= self._cache_budget:
            self._cache[path] = img
            self._cache_budget -= img.nbytes
        return img

    def _source_texture(self, h: int, w: int) -> np.ndarray:
        rng = self.rng
        if self.textures_dir is not None:
            while self._paths:
                path = self._paths[int(rng.integers(len(self._paths)))]
                try:
                    return _random_crop_resize(self._load(path), rng, h, w)
                except ImageError as exc:
                    log.warning("skipping texture: %s", exc)
                    self._paths.remove(path)
            raise DataError(f"texture folder {self.textures_dir} has no readable images left")
        photos = _skimage_photos()
        if photos and rng.random() < 0.5:
            return _random_crop_resize(photos[int(rng.integers(len(photos)))], rng, h, w)
        kind = PROCEDURAL_KINDS[int(rng.integers(len(PROCEDURAL_KINDS)))]
        return _procedural(kind, rng, h, w)

    def texture(self, h: int, w: int, image: np.ndarray | None = None) -> np.ndarray:
        """A random, jittered texture (h, w, 3) uint8 RGB: foreign, or a crop of ``image`` itself
        (probability ``self_fraction``); grey when ``image`` is grey and ``match_grey`` is set."""
        own = image is not None and self.self_fraction > 0 and self.rng.random() < self.self_fraction
        src = _random_crop_resize(image, self.rng, h, w) if own else self._source_texture(h, w)
        tex = _brightness_contrast_colour(src, self.rng)
        for i in self.rng.choice(len(_EXTRA_OPS), size=2, replace=False):
            tex = _EXTRA_OPS[int(i)](tex, self.rng)
        if self.match_grey and image is not None and _is_grey(image):
            tex = np.repeat(cv2.cvtColor(np.ascontiguousarray(tex), cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
        return np.ascontiguousarray(tex)

    # -- mask -----------------------------------------------------------------------------------------

    def mask(self, h: int, w: int) -> np.ndarray:
        """A non-empty thresholded Perlin mask (h, w) bool."""
        rng = self.rng
        smin, smax = self.perlin_scale_range
        for _ in range(_MASK_TRIES):
            # At least 4 px per lattice cell: finer lattices on tiny images would sample only zeros.
            res = (
                min(2 ** int(rng.integers(smin, smax + 1)), max(1, h // 4)),
                min(2 ** int(rng.integers(smin, smax + 1)), max(1, w // 4)),
            )
            noise = perlin_noise_2d((h, w), res, rng)
            if self.rotate:
                rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), rng.uniform(-90.0, 90.0), 1.0)
                noise = cv2.warpAffine(
                    noise, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
                )
            mask = noise > self.threshold
            if mask.any():
                return mask
        # Coarse noise can stay below the threshold many times in a row (tiny images, high threshold):
        # keep its top 5 % instead of looping on.
        return noise >= np.quantile(noise, 0.95)

    def line_mask(self, h: int, w: int) -> np.ndarray:
        """A thin crack-like mask (h, w) bool: a random polyline of 2-6 segments, 1-3 px wide, spanning
        10-60 % of the image's longer side; never empty."""
        rng = self.rng
        length = rng.uniform(0.1, 0.6) * max(h, w)
        n_seg = int(rng.integers(2, 7))
        angle = rng.uniform(0, 2 * math.pi)
        pts = [np.array([rng.uniform(0, w), rng.uniform(0, h)])]
        for _ in range(n_seg):
            angle += rng.normal(0, 0.6)  # cracks wander but keep a direction
            step = length / n_seg * np.array([math.cos(angle), math.sin(angle)])
            nxt = pts[-1] + step
            if not (0 <= nxt[0] <= w - 1 and 0 <= nxt[1] <= h - 1):  # turn back at the border, not pile up on it
                angle += math.pi
                nxt = pts[-1] - step
            pts.append(np.clip(nxt, 0, [w - 1, h - 1]))
        canvas = np.zeros((h, w), np.uint8)
        poly = np.round(np.stack(pts)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [poly], False, 1, thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_8)
        if not canvas.any():  # pragma: no cover - polylines always draws its first point
            canvas[int(pts[0][1]), int(pts[0][0])] = 1
        return canvas.astype(bool)

    # -- sample ---------------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not (
            isinstance(image, np.ndarray)
            and image.ndim == 3
            and image.shape[2] == 3
            and image.dtype == np.uint8
        ):
            desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ImageError(f"pseudo-anomaly input must be an (H, W, 3) uint8 RGB image, got {desc}")
        h, w = image.shape[:2]
        if self.rng.random() < self.clean_fraction:
            return image.copy(), np.zeros((h, w), np.float32)
        line = self.line_fraction > 0 and self.rng.random() < self.line_fraction
        mask = self.line_mask(h, w) if line else self.mask(h, w)
        inside_img = image[mask].astype(np.float32)
        for _ in range(_TEXTURE_TRIES):
            texture = self.texture(h, w, image)
            beta = self.rng.uniform(*self.beta_range)
            blended = (1.0 - beta) * texture[mask].astype(np.float32) + beta * inside_img
            # A change nobody could see is label noise, not an anomaly: draw again.
            if float(np.abs(blended - inside_img).mean()) >= _MIN_MEAN_CHANGE:
                break
        out = image.copy()
        out[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out, mask.astype(np.float32)

"""Synthetic production line (numpy/OpenCV only, seeded).

``render_part`` draws one camera frame: a turned metal flange (concentric machining rings, a centre
bore, four bolt holes, chamfer highlights, the anisotropic "bow-tie" reflection of turned metal) lying
on a ribbed conveyor belt, with pose, size, lighting and sensor-noise jitter. Defects ("scratch",
"hole", "stain") are drawn at random positions on the metal and come with a pixel mask.
``make_synthetic_category`` writes such frames as an MVTec-AD-format category.

All lengths are defined for a 256 px frame and scale with ``size``.
"""

from __future__ import annotations

import logging
import math
import shutil
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFECT_TYPES = ("scratch", "hole", "stain")

# Defect mask area bounds, as a share of the frame; placement is redrawn until the mask fits.
MIN_DEFECT_AREA = 0.002
MAX_DEFECT_AREA = 0.03
_PLACEMENT_TRIES = 30
_AA_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel positions
_AA_ONE = 1 << _AA_SHIFT


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, each (size, size) float32 (x varies along columns)."""
    ax = np.arange(size, dtype=np.float32)
    x, y = np.meshgrid(ax, ax)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _fx(v: float) -> int:
    """Float pixel coordinate to cv2 fixed point (shift=_AA_SHIFT)."""
    return int(round(v * _AA_ONE))


def _smooth_noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Band-limited noise (size, size) float32, std ~0.5-1: a coarse (rows, cols) grid, bilinearly
    upsampled. Unequal cells give streaks (fabric / grinding grain)."""
    coarse = rng.standard_normal(cells, dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


class _Part:
    """Geometry of one flange in a frame (pixels)."""

    def __init__(self, rng: np.random.Generator, size: int):
        s = size / 256.0
        self.size = size
        self.scale = s
        self.cx = size / 2 + rng.uniform(-0.04, 0.04) * size
        self.cy = size / 2 + rng.uniform(-0.04, 0.04) * size
        self.radius = 0.36 * size * rng.uniform(0.975, 1.025)
        self.bore = self.radius * 0.27 * rng.uniform(0.98, 1.02)
        self.bolt_circle = self.radius * 0.63
        self.bolt_radius = self.radius * 0.075
        angle = rng.uniform(0, math.pi / 2)  # four-fold symmetric: a quarter turn covers every pose
        self.bolts = [
            (
                self.cx + self.bolt_circle * math.cos(angle + k * math.pi / 2),
                self.cy + self.bolt_circle * math.sin(angle + k * math.pi / 2),
            )
            for k in range(4)
        ]

    def random_point_on_metal(self, rng: np.random.Generator, clearance: float) -> tuple[float, float]:
        """A point on the metal at least ``clearance`` px from every edge (outer rim, bore, bolt holes)."""
        for _ in range(100):
            rad = rng.uniform(self.bore + clearance, self.radius - clearance)
            ang = rng.uniform(0, 2 * math.pi)
            x, y = self.cx + rad * math.cos(ang), self.cy + rad * math.sin(ang)
            if all(math.hypot(x - bx, y - by) > self.bolt_radius + clearance for bx, by in self.bolts):
                return x, y
        return x, y  # pragma: no cover - the annulus is far larger than the bolt holes


def _metal_alpha(part: _Part, r: np.ndarray) -> np.ndarray:
    """Coverage (size, size) float32 in [0, 1] of metal: disc minus bore and bolt holes, anti-aliased."""
    disc = np.clip(part.radius + 0.5 - r, 0.0, 1.0)
    holes = np.zeros((part.size, part.size), np.uint8)
    cv2.circle(holes, (_fx(part.cx), _fx(part.cy)), _fx(part.bore), 255, -1, cv2.LINE_AA, _AA_SHIFT)
    for bx, by in part.bolts:
        cv2.circle(holes, (_fx(bx), _fx(by)), _fx(part.bolt_radius), 255, -1, cv2.LINE_AA, _AA_SHIFT)
    return disc * (1.0 - holes.astype(np.float32) * (1.0 / 255.0))


def _belt(rng: np.random.Generator, part: _Part, y: np.ndarray) -> np.ndarray:
    """Conveyor belt luminance (size, size) float32 with the part's soft shadow."""
    size, s = part.size, part.scale
    period = 14.0 * s * rng.uniform(0.97, 1.03)
    phase = rng.uniform(0, 2 * math.pi)  # the belt moves between frames
    ribs = np.sin(np.arange(size, dtype=np.float32) * (2 * math.pi / period) + phase)
    belt = (
        52.0 + 5.0 * ribs[:, None] + 3.0 * _smooth_noise(rng, size, (max(2, size // 3), max(2, size // 24)))
    )
    shadow = np.zeros((size, size), np.float32)
    off = 5.0 * s
    cv2.circle(
        shadow, (_fx(part.cx + off), _fx(part.cy + off)), _fx(part.radius), 1.0, -1, cv2.LINE_AA, _AA_SHIFT
    )
    k = max(3, int(12 * s) | 1)
    shadow = cv2.blur(shadow, (k, k))
    return belt * (1.0 - 0.45 * shadow)


def _metal(
    rng: np.random.Generator, part: _Part, dx: np.ndarray, dy: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """Turned-metal luminance (size, size) float32 (defined everywhere; the caller masks it)."""
    size, s = part.size, part.scale
    gain = rng.uniform(0.88, 1.12)
    # Light direction: a shallow linear falloff across the part.
    light = [float(v) for v in rng.uniform(-0.12, 0.12, size=2)]
    inv_r = 1.0 / part.radius
    base = 150.0 * gain * (1.0 + (light[0] * inv_r) * dx + (light[1] * inv_r) * dy)
    # Concentric turning marks: period ~3 px, slight period and phase variation.
    k = 2 * math.pi / (max(2.2, 3.2 * s) * rng.uniform(0.97, 1.03))
    base += 7.0 * np.sin(r * k + rng.uniform(0, 2 * math.pi))
    # Bow-tie reflection of turned metal, brightest along the direction phi: with
    # p = r cos(theta - phi), cos(2 (theta - phi)) = 2 p^2 / r^2 - 1 (no atan2 needed).
    phi = rng.uniform(-0.2, 0.2) + math.pi / 4
    p = dx * math.cos(phi)
    p += dy * math.sin(phi)
    p *= p
    p /= r * r + 1e-3
    lobe = np.maximum(p * 2.0 - 1.0, 0.0)
    lobe *= lobe
    lobe *= 30.0 * gain
    base += lobe
    # Fine grinding grain.
    base += 3.0 * _smooth_noise(rng, size, (max(2, size // 2), max(2, size // 2)))
    # Chamfer highlights at the outer rim and around the bore.
    rims = np.zeros((size, size), np.float32)
    t = max(1, int(round(2 * s)))
    cv2.circle(rims, (_fx(part.cx), _fx(part.cy)), _fx(part.radius - 2.5 * s), 1.0, t, cv2.LINE_AA, _AA_SHIFT)
    cv2.circle(rims, (_fx(part.cx), _fx(part.cy)), _fx(part.bore + 2.0 * s), 1.0, t, cv2.LINE_AA, _AA_SHIFT)
    base += 45.0 * gain * rims
    return base


class _Defect:
    """A drawn defect: ``alpha`` (size, size) float32 coverage; ``shade(lum)`` applies it to the
    luminance in place; ``tint`` (3,) optional per-channel RGB gain applied with ``alpha`` afterwards."""

    def __init__(self, alpha: np.ndarray, shade, tint: np.ndarray | None = None):
        self.alpha = alpha
        self.shade = shade
        self.tint = tint


def _draw_scratch(rng: np.random.Generator, part: _Part, metal: np.ndarray) -> _Defect:
    s = part.scale
    length = rng.uniform(0.2, 0.42) * part.size
    x0, y0 = part.random_point_on_metal(rng, 4 * s)
    ang = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(ang), math.sin(ang)
    bend = rng.uniform(-0.12, 0.12) * length  # a slightly curved stroke
    pts = []
    for t in np.linspace(0.0, 1.0, 6):
        off = bend * 4 * t * (1 - t)
        pts.append((_fx(x0 + ux * length * t - uy * off), _fx(y0 + uy * length * t + ux * off)))
    stroke = np.zeros_like(metal)
    thickness = max(1, int(round(3 * s)))
    cv2.polylines(stroke, [np.array(pts, np.int32)], False, 1.0, thickness, cv2.LINE_AA, _AA_SHIFT)
    stroke *= metal
    # Scratches catch the light (bright) or cut a dark groove.
    amp = rng.uniform(55, 85) * (1.0 if rng.random() < 0.7 else -1.0)

    def shade(lum: np.ndarray) -> None:
        lum += amp * stroke

    return _Defect(stroke, shade)


def _draw_hole(rng: np.random.Generator, part: _Part, metal: np.ndarray) -> _Defect:
    s = part.scale
    rad = rng.uniform(7.0, 11.0) * s
    x, y = part.random_point_on_metal(rng, rad + 3 * s)
    axes = (_fx(rad), _fx(rad * rng.uniform(0.75, 1.0)))
    angle = rng.uniform(0, 180)
    pit = np.zeros_like(metal)
    cv2.ellipse(pit, (_fx(x), _fx(y)), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, _AA_SHIFT)
    # Bright rim on the lit side of the pit, dark interior.
    rim = np.zeros_like(metal)
    shift = 1.5 * s
    t = max(1, int(round(2 * s)))
    cv2.ellipse(rim, (_fx(x - shift), _fx(y - shift)), axes, angle, 0, 360, 1.0, t, cv2.LINE_AA, _AA_SHIFT)
    rim *= 1.0 - pit
    pit *= metal
    rim *= metal
    depth = rng.uniform(20, 40)

    def shade(lum: np.ndarray) -> None:
        lum *= 1.0 - pit
        lum += depth * pit + 60.0 * rim

    return _Defect(np.maximum(pit, rim), shade)


def _draw_stain(rng: np.random.Generator, part: _Part, metal: np.ndarray) -> _Defect:
    s = part.scale
    extent = rng.uniform(10.0, 18.0) * s
    x, y = part.random_point_on_metal(rng, extent)
    blob = np.zeros_like(metal)
    for _ in range(int(rng.integers(3, 6))):
        ex = x + rng.normal(0, extent * 0.35)
        ey = y + rng.normal(0, extent * 0.35)
        axes = (_fx(extent * rng.uniform(0.35, 0.7)), _fx(extent * rng.uniform(0.25, 0.55)))
        cv2.ellipse(
            blob, (_fx(ex), _fx(ey)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA, _AA_SHIFT
        )
    blob = cv2.GaussianBlur(blob, (0, 0), 1.5 * s + 0.5)
    blob *= metal
    strength = rng.uniform(0.3, 0.45)
    # Rusty/oily tint: red kept, blue reduced most.
    tint = np.array([1.0, rng.uniform(0.72, 0.85), rng.uniform(0.45, 0.6)], np.float32)

    def shade(lum: np.ndarray) -> None:
        lum *= 1.0 - strength * blob

    return _Defect(blob, shade, tint)


_DRAWERS = {"scratch": _draw_scratch, "hole": _draw_hole, "stain": _draw_stain}


def _place_defect(rng: np.random.Generator, part: _Part, metal: np.ndarray, kind: str) -> _Defect:
    """Draw ``kind`` until its mask (alpha > 0.5) covers MIN..MAX_DEFECT_AREA of the frame."""
    lo, hi = MIN_DEFECT_AREA * part.size**2, MAX_DEFECT_AREA * part.size**2
    for _ in range(_PLACEMENT_TRIES):
        defect = _DRAWERS[kind](rng, part, metal)
        area = int(np.count_nonzero(defect.alpha > 0.5))
        if lo <= area <= hi:
            return defect
    log.debug("synthetic %s mask covers %d px, outside the target range", kind, area)
    return defect


def _apply_tint(image: np.ndarray, alpha: np.ndarray, tint: np.ndarray) -> None:
    """image (H, W, 3) *= 1 - alpha * (1 - tint), only inside alpha's bounding box."""
    x, y, w, h = cv2.boundingRect((alpha > 1e-3).astype(np.uint8))
    if w and h:
        roi = image[y : y + h, x : x + w]
        roi *= 1.0 - alpha[y : y + h, x : x + w, None] * (1.0 - tint)


def render_part(
    rng: np.random.Generator, size: int = 256, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One frame of the line: (size, size, 3) uint8 RGB image and (size, size) bool defect mask
    (all False for a good part). ``defect``: None or one of DEFECT_TYPES."""
    if defect is not None and defect not in _DRAWERS:
        raise ConfigError(f"unknown defect kind {defect!r}; choose one of {', '.join(DEFECT_TYPES)}")
    if size < 32:
        raise ConfigError(f"synthetic frame size must be at least 32 px, got {size}")
    part = _Part(rng, size)
    x, y = _grid(size)
    dx = x - np.float32(part.cx)
    dy = y - np.float32(part.cy)
    r = np.sqrt(dx * dx + dy * dy)
    metal = _metal_alpha(part, r)
    belt = _belt(rng, part, y)
    lum = _metal(rng, part, dx, dy, r)
    drawn = _place_defect(rng, part, metal, defect) if defect is not None else None
    if drawn is not None:
        drawn.shade(lum)
    # Colour: blue-grey steel over a grey-green belt. rgb = belt * belt_tint + (lum - belt) * metal * steel
    # would need two (H, W, 3) products; one 2->3 channel cv2.transform does it in one pass.
    steel = np.array([0.97, 1.0, 1.05], np.float32) * rng.uniform(0.98, 1.02, size=3).astype(np.float32)
    belt_tint = np.array([0.86, 1.0, 0.92], np.float32)
    lum -= belt
    lum *= metal
    # Sensor read/shot noise: added to the belt term only, it reaches every pixel (metal included) once;
    # chroma noise follows after colouring.
    belt += rng.standard_normal((size, size), dtype=np.float32) * np.float32(rng.uniform(1.5, 3.0))
    image = cv2.transform(cv2.merge([belt, lum]), np.stack([belt_tint, steel], axis=1))
    if drawn is not None and drawn.tint is not None:
        _apply_tint(image, drawn.alpha, drawn.tint)
    out = cv2.convertScaleAbs(image)  # saturating round to uint8; values are >= 0 here
    # Independent per-channel noise in [-3, 3] from raw random bytes (much cheaper than normals).
    raw = np.frombuffer(rng.bytes(size * size * 3), np.uint8).reshape(size, size, 3)
    cv2.add(out, raw >> 6, dst=out)
    cv2.subtract(out, raw & 3, dst=out)
    mask = drawn.alpha > 0.5 if drawn is not None else np.zeros((size, size), bool)
    return out, mask


class CategoryExistsError(DataError):
    """The category folder exists and is not empty; ``path`` names it. Callers word the way to replace it
    (``overwrite=True`` here, ``--overwrite`` on the command line)."""

    def __init__(self, path: Path):
        super().__init__(f"{path} already exists and is not empty (pass overwrite=True to replace it)")
        self.path = path


def _prepare_output(category_dir: Path, overwrite: bool) -> None:
    if category_dir.exists() and any(category_dir.iterdir()):
        if not overwrite:
            raise CategoryExistsError(category_dir)
        for sub in ("train", "test", "ground_truth"):
            shutil.rmtree(category_dir / sub, ignore_errors=True)
    category_dir.mkdir(parents=True, exist_ok=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise DataError(f"cannot write {path}")


def make_synthetic_category(
    out_root: str | Path,
    category: str = "widget",
    n_train: int = 60,
    n_test_good: int = 12,
    n_test_per_defect: int = 8,
    size: int = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an MVTec-AD-format category ``<out_root>/<category>`` of synthetic frames and return its
    path. train/good: n_train images; test/good: n_test_good; test/<defect>: n_test_per_defect each with
    0/255 masks in ground_truth/<defect>/<stem>_mask.png. Files are 000.png, 001.png, ... Deterministic
    for a seed: every image has its own generator seeded by (seed, split, index), so changing one count
    leaves the other images unchanged. An existing non-empty category folder is an error unless
    ``overwrite`` (then its train/test/ground_truth folders are replaced): CategoryExistsError."""
    for name, n in (
        ("n_train", n_train),
        ("n_test_good", n_test_good),
        ("n_test_per_defect", n_test_per_defect),
    ):
        if n < 0:
            raise ConfigError(f"{name} must be >= 0, got {n}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if n_train < 1:
        raise ConfigError("n_train must be at least 1 (a category needs good training images)")
    category_dir = Path(out_root) / category
    _prepare_output(category_dir, overwrite)

    # (folder, defect kind, count, split code for the seed)
    plan = [("train/good", None, n_train, 0), ("test/good", None, n_test_good, 1)]
    plan += [(f"test/{kind}", kind, n_test_per_defect, 2 + i) for i, kind in enumerate(DEFECT_TYPES)]
    for folder, kind, count, code in plan:
        for i in range(count):
            rng = np.random.default_rng([seed, code, i])
            image, mask = render_part(rng, size, kind)
            _write_png(category_dir / folder / f"{i:03d}.png", image)
            if kind is not None:
                _write_png(
                    category_dir / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255
                )
    log.info("wrote synthetic category %s", category_dir)
    return category_dir

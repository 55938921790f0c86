"""Camera image → network input, numpy/OpenCV only. The same function serves training, eval and the line."""

from __future__ import annotations

import numpy as np

from .errors import ImageError
from .manifest import InputSpec


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
    """(H, W[, C]) camera image → (1, 3, spec.height, spec.width) float32, normalised per the manifest.

    The whole image is resized to the model input (aspect ratio not kept), so the image score does
    not depend on the original size or aspect ratio.
    """
    import cv2

    rgb = to_rgb8(image, channel_order)
    interp = cv2.INTER_AREA if spec.resize == "area" else cv2.INTER_LINEAR
    if rgb.shape[:2] != (spec.height, spec.width):
        rgb = cv2.resize(rgb, (spec.width, spec.height), interpolation=interp)
    if spec.channel_order == "BGR":
        rgb = rgb[:, :, ::-1]
    x = rgb.astype(np.float32) * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

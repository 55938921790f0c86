"""Does the evaluated data look like what the model was trained on? Cheap checks that only warn.

- Colour vs greyscale and image size, from file headers alone (no decoding; a few milliseconds for a
  category): the test images against the category's own train/good images.
- The test goods' scores against the good scores the model was calibrated on (manifest calibration):
  a model fed other data (another product, camera, colour or size) scores its goods far higher.

The manifest's ``provenance.data_fingerprint`` cannot serve as the reference: it hashes the file names and
sizes of the images trained on, after the trainer's seeded holdout split, and neither that split nor the
training data's colour and sizes are recorded, so the runtime cannot recompute or compare it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.mvtec import ImageHeader, read_image_header
from ..manifest import Manifest

log = logging.getLogger(__name__)

MAX_REFERENCE = 500  # train/good headers read at most (evenly spread over the folder)
SIZE_SLACK = 1.25  # a test image's width and height may lie this factor beyond the train/good range
ASPECT_SLACK = 1.1  # and its aspect ratio this factor
REFERENCE = "the category's train/good images (file headers) and the manifest's calibration good scores"


def _kind(header: ImageHeader | None) -> str:
    """"grey" (1 or 2 channels stored), "colour" (3 or 4) or "unknown" (no header, or a palette BMP)."""
    if header is None or header.channels is None:
        return "unknown"
    return "grey" if header.channels <= 2 else "colour"


def _size(header: ImageHeader) -> str:
    return f"{header.width}x{header.height}"


def _common(counts: Counter, k: int = 3) -> str:
    """'96x48 ×2, 32x32, …' for the ``k`` commonest sizes."""
    text = ", ".join(size if n == 1 else f"{size} ×{n}" for size, n in counts.most_common(k))
    return text + (", …" if len(counts) > k else "")


def summarize(headers: Sequence[ImageHeader | None]) -> dict:
    """{"images", "grey", "colour", "unknown", "sizes": {"WxH": count} (the 5 commonest, width x height),
    "other_sizes": images of any other size} of a list of headers (None: unreadable)."""
    kinds = Counter(_kind(h) for h in headers)
    sizes = Counter(_size(h) for h in headers if h is not None)
    top = dict(sizes.most_common(5))
    return {"images": len(headers), "grey": kinds["grey"], "colour": kinds["colour"],
            "unknown": kinds["unknown"], "sizes": top, "other_sizes": sum(sizes.values()) - sum(top.values())}


def _colour_warning(test: list[ImageHeader | None], train: list[ImageHeader | None]) -> str | None:
    t, r = Counter(map(_kind, test)), Counter(map(_kind, train))
    for odd, usual in (("grey", "colour"), ("colour", "grey")):
        if t[odd] and r[usual] and not r[odd]:
            words = {"grey": "greyscale", "colour": "colour"}
            return (f"{t[odd]} of {len(test)} test images are {words[odd]}, but the category's train/good "
                    f"images are {words[usual]}")
    return None


def _outside(h: ImageHeader, ref: list[ImageHeader]) -> bool:
    """True when ``h``'s width, height or aspect ratio lies beyond the range of the ``ref`` images', with
    SIZE_SLACK / ASPECT_SLACK of slack (a set of varied sizes covers its range, a fixed size only itself)."""
    widths, heights = [r.width for r in ref], [r.height for r in ref]
    aspects = [r.width / r.height for r in ref]
    return not (min(widths) / SIZE_SLACK <= h.width <= max(widths) * SIZE_SLACK
                and min(heights) / SIZE_SLACK <= h.height <= max(heights) * SIZE_SLACK
                and min(aspects) / ASPECT_SLACK <= h.width / h.height <= max(aspects) * ASPECT_SLACK)


def _size_range(ref: list[ImageHeader]) -> str:
    sizes = Counter(map(_size, ref))
    if len(sizes) <= 3:
        return ", ".join(sizes)
    return (f"width {min(r.width for r in ref)}-{max(r.width for r in ref)}, "
            f"height {min(r.height for r in ref)}-{max(r.height for r in ref)}")


def _size_warning(test: list[ImageHeader | None], train: list[ImageHeader | None],
                  manifest: Manifest) -> str | None:
    ref = [h for h in train if h is not None]
    odd = Counter(_size(h) for h in test if h is not None and ref and _outside(h, ref))
    if not odd:
        return None
    spec = manifest.input
    return (f"{sum(odd.values())} of {len(test)} test images differ in size or aspect ratio from the "
            f"category's train/good images (width x height {_common(odd)}; train/good: {_size_range(ref)}); "
            f"{_placement(spec)}, so the model sees them differently")


def _placement(spec) -> str:
    """How the model input takes an image, in words (edge_inspect.geometry)."""
    if spec.tiles is not None:
        return f"every image is cut into {spec.width}x{spec.height} tiles at its own resolution"
    if spec.fit == "letterbox":
        return f"every image is scaled to fit the model input {spec.width}x{spec.height} and padded"
    return f"every image is resized whole to the model input {spec.width}x{spec.height}"


def _score_warning(good_scores: Sequence[float], manifest: Manifest) -> str | None:
    stats = manifest.calibration.good_scores
    if not len(good_scores) or stats.count < 1:
        return None
    median = float(np.median(good_scores))
    if median <= stats.max:
        return None
    return (f"the test goods' median score {median:.4g} lies above every good score the model was "
            f"calibrated on (highest {stats.max:.4g} of {stats.count}): this data does not look like the "
            "model's (another product, camera, lighting, colour or image size?)")


def _spread(paths: Sequence[Path], k: int) -> list[Path]:
    """At most ``k`` of ``paths``, evenly spread."""
    if len(paths) <= k:
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, k).round().astype(int)]


def check_data(test_paths: Sequence[Path], train_paths: Sequence[Path], good_scores: Sequence[float],
               manifest: Manifest) -> dict:
    """metrics.json's "data_check": {"reference", "test_images", "train_images" (see summarize), "warnings"}.

    ``test_paths`` every test image, ``train_paths`` the category's train/good images (at most
    MAX_REFERENCE of them are read), ``good_scores`` the scores of the test goods. Each warning is one
    sentence, also logged at WARNING.
    """
    test = [read_image_header(p) for p in test_paths]
    train = [read_image_header(p) for p in _spread(train_paths, MAX_REFERENCE)]
    warnings = [w for w in (_colour_warning(test, train), _size_warning(test, train, manifest),
                            _score_warning(good_scores, manifest)) if w]
    for w in warnings:
        log.warning("eval: %s", w)
    return {"reference": REFERENCE, "test_images": summarize(test), "train_images": summarize(train),
            "warnings": warnings}

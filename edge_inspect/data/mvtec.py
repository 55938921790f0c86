"""MVTec AD folder loader (numpy/OpenCV only).

Layout of one category folder ``<root>/<category>``::

    train/good/*.png|jpg|bmp|tif        good images only
    test/<type>/*                       ``good`` plus one folder per defect type
    ground_truth/<type>/<stem>_mask.png one mask per defect image (none for test/good)

Images are returned as (H, W, 3) uint8 RGB, masks as (H, W) bool.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError, ImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
MASK_SUFFIX = "_mask"


@dataclass
class Sample:
    """One image of a category. ``label`` is 0 for good, 1 for a defect; ``rel_path`` is posix, relative
    to the category folder (e.g. ``test/crack/000.png``)."""

    path: Path
    defect_type: str
    label: int
    mask_path: Path | None
    rel_path: str


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension, hidden files skipped), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _images_below(folder: Path, skip: str | None = None) -> list[Path]:
    """Image files in ``folder`` and its subfolders, except under a subfolder named ``skip``; sorted."""
    found = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if skip is not None and skip in rel[:-1]:
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in rel):
            found.append(p)
    return found


def defect_images(folder: str | Path) -> tuple[list[Path], str]:
    """Labelled defective images for calibration: (files, what was taken, in words).

    Takes every image in ``folder`` and below it, except under a ``good/`` subfolder, so an MVTec ``test/``
    folder gives its defect types only. A folder that is itself named ``good`` is refused (DataError),
    as is one without images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"defect folder not found: {folder}")
    if folder.resolve().name == "good":
        raise DataError(f"{folder} is a folder of good parts; give a folder of defective parts")
    files = _images_below(folder, skip="good")
    if not files:
        raise DataError(f"no defect images in {folder} ({', '.join(IMAGE_EXTENSIONS)}; good/ is skipped)")
    kinds = sorted({f.relative_to(folder).parts[0] for f in files if len(f.relative_to(folder).parts) > 1})
    what = f"{len(files)} defect images from {folder}"
    if kinds:
        what += f" ({', '.join(kinds)})"
    if (folder / "good").is_dir():
        what += "; good/ left out"
    return files, what


def good_images(folder: str | Path) -> tuple[list[Path], str]:
    """Good-part images for calibration: (files, what was taken, in words).

    A folder with a ``good/`` subfolder (an MVTec ``train/`` or ``test/`` folder) gives that subfolder's
    images only; otherwise every image in ``folder`` and below. DataError when there are none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"good-parts folder not found: {folder}")
    if (folder / "good").is_dir():
        folder = folder / "good"
    files = _images_below(folder)
    if not files:
        raise DataError(f"no images in {folder} ({', '.join(IMAGE_EXTENSIONS)})")
    return files, f"{len(files)} good images from {folder}"


class MVTecCategory:
    """One MVTec-AD-format category folder ``<root>/<category>``."""

    def __init__(self, root: str | Path, category: str):
        self.root = Path(root)
        self.category = category
        self.path = self.root / category
        if not self.path.is_dir():
            raise DataError(f"category folder {self.path} does not exist")
        good = self.path / "train" / GOOD
        if not good.is_dir():
            raise DataError(f"category folder {self.path} has no train/good folder")
        if not list_images(good):
            raise DataError(f"{good} contains no images ({', '.join(IMAGE_EXTENSIONS)})")

    def __repr__(self) -> str:
        return f"MVTecCategory({str(self.root)!r}, {self.category!r})"

    def _sample(self, path: Path, defect_type: str, mask_path: Path | None) -> Sample:
        return Sample(
            path=path,
            defect_type=defect_type,
            label=0 if defect_type == GOOD else 1,
            mask_path=mask_path,
            rel_path=path.relative_to(self.path).as_posix(),
        )

    def train_samples(self) -> list[Sample]:
        """Good training images, sorted by file name."""
        return [self._sample(p, GOOD, None) for p in list_images(self.path / "train" / GOOD)]

    def _test_types(self) -> list[str]:
        test = self.path / "test"
        if not test.is_dir():
            raise DataError(f"category folder {self.path} has no test folder")
        return sorted(d.name for d in test.iterdir() if d.is_dir() and not d.name.startswith("."))

    def defect_types(self) -> list[str]:
        """Defect folder names under test/ (``good`` excluded) that hold at least one image, sorted."""
        return [t for t in self._test_types() if t != GOOD and list_images(self.path / "test" / t)]

    def has_masks(self) -> bool:
        """True if any ground_truth mask file exists."""
        gt = self.path / "ground_truth"
        return gt.is_dir() and any(list_images(d) for d in gt.iterdir() if d.is_dir())

    def mask_path_for(self, image: Path, defect_type: str) -> Path:
        """Expected mask path of a defect image: ``ground_truth/<type>/<stem>_mask.png``."""
        return self.path / "ground_truth" / defect_type / f"{image.stem}{MASK_SUFFIX}.png"

    def _find_mask(self, image: Path, defect_type: str) -> Path | None:
        expected = self.mask_path_for(image, defect_type)
        if expected.is_file():
            return expected
        # Some conversions keep the image's own format for masks; accept any image extension.
        for ext in IMAGE_EXTENSIONS:
            alt = expected.with_suffix(ext)
            if alt.is_file():
                return alt
        return None

    def test_samples(self, require_masks: bool = True) -> list[Sample]:
        """Test images sorted by defect type, then file name. Defect images get their mask path; a
        missing mask raises DataError when ``require_masks`` (else ``mask_path`` is None)."""
        samples: list[Sample] = []
        for defect_type in self._test_types():
            for image in list_images(self.path / "test" / defect_type):
                mask = None
                if defect_type != GOOD:
                    mask = self._find_mask(image, defect_type)
                    if mask is None and require_masks:
                        raise DataError(
                            f"defect image {image} has no mask: expected "
                            f"{self.mask_path_for(image, defect_type)}"
                        )
                samples.append(self._sample(image, defect_type, mask))
        if not samples:
            raise DataError(f"{self.path / 'test'} contains no images")
        return samples


def _decode(path: str | Path) -> np.ndarray:
    """Decode a file with IMREAD_UNCHANGED; ImageError naming the file if it cannot be read."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: also works for non-ASCII paths
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise ImageError(f"cannot decode image {path}: file is empty")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"cannot decode image {path}: {exc}") from exc
    if image is None:
        raise ImageError(f"cannot decode image {path}: unreadable, truncated or unsupported format")
    return image


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise ImageError(f"image {path} has unsupported pixel type {image.dtype} (need 8- or 16-bit integers)")


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB. Grayscale becomes 3 equal channels, alpha is dropped,
    16-bit is scaled to 8-bit (>> 8). Unreadable or truncated files raise ImageError."""
    path = Path(path)
    image = _to_uint8(_decode(path), path)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"image {path} has unsupported shape {image.shape} (need 1, 3 or 4 channels)")


def load_mask(path: str | Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a mask as (H, W) bool (pixel > 127). ``shape``: the image's (H, W) (extra dims ignored);
    a mask of another size raises DataError; it is never resized."""
    path = Path(path)
    mask = _to_uint8(_decode(path), path)
    if mask.ndim == 3:
        # Colour-saved masks: a pixel is defective if any channel is (alpha ignored).
        mask = mask[:, :, :3].max(axis=2)
    if mask.ndim != 2:
        raise ImageError(f"mask {path} has unsupported shape {mask.shape}")
    if shape is not None and tuple(mask.shape) != tuple(shape[:2]):
        h, w = shape[:2]
        raise DataError(f"mask {path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image is {h}x{w}")
    return mask > 127


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot stat {path}: {exc.strerror or exc}") from exc


def fingerprint(samples: Iterable[Sample]) -> str:
    """Cheap data fingerprint for provenance: sha256 (hex) over the sorted relative paths, image file
    sizes and mask file sizes. Order of ``samples`` does not matter; contents are not read."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.rel_path):
        mask_size = _file_size(sample.mask_path) if sample.mask_path is not None else -1
        digest.update(f"{sample.rel_path}\t{_file_size(sample.path)}\t{mask_size}\n".encode())
    return digest.hexdigest()

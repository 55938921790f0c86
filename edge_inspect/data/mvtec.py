"""MVTec AD folder loader (numpy/OpenCV only).

Layout of one category folder ``<root>/<category>``::

    train/good/*.png|jpg|bmp|tif        good images only
    test/<type>/*                       ``good`` plus one folder per defect type
    ground_truth/<type>/<stem>_mask.png one mask per defect image (none for test/good)

Images are returned as (H, W, 3) uint8 RGB, masks as (H, W) bool. A file whose header declares more than
``max_image_pixels()`` pixels is refused before it is decoded (see ``check_image_size``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DataError, ImageError

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


def images_below(folder: Path, skip: str | None = None) -> list[Path]:
    """Image files in ``folder`` and its subfolders, except under a subfolder named ``skip``; sorted."""
    found = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if skip is not None and skip in rel[:-1]:
            continue
        hidden = any(part.startswith(".") for part in rel)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not hidden:
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
    files = images_below(folder, skip="good")
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
    files = images_below(folder)
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


# ---------------------------------------------------------------------------------------------
# image size before decoding: a small PNG can decode to gigabytes (16000² in 269 KB → 1.3 GB)

MAX_IMAGE_PIXELS = 8192 * 8192  # 64 Mi pixels, a 192 MiB RGB array; OpenCV's own limit is 1 Gi pixels
MAX_PIXELS_ENV = "EDGE_INSPECT_MAX_IMAGE_PIXELS"
HEADER_BYTES = 4096  # enough for PNG, BMP and most JPEG/TIFF headers; more is read only when needed
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares: ``format`` ("png", "jpeg", "bmp", "tiff"), ``width`` and
    ``height`` in pixels, ``channels`` as stored (1 grey, 2 grey + alpha, 3 colour (palette included),
    4 colour + alpha; None when the header does not say, e.g. a palette BMP)."""

    format: str
    width: int
    height: int
    channels: int | None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _png(b) -> ImageHeader | None:
    if len(b) < 26 or bytes(b[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack(">II", b[16:24])
    return ImageHeader("png", width, height, _PNG_CHANNELS.get(b[25]))


def _jpeg(b) -> ImageHeader | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None  # not at a marker: corrupt, let the decoder say so
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        elif marker in _JPEG_SOF:
            if i + 10 > len(b):
                return None
            height, width = struct.unpack(">HH", b[i + 5 : i + 9])
            components = b[i + 9]
            return ImageHeader("jpeg", width, height, {1: 1, 3: 3, 4: 3}.get(components))
        else:
            i += 2 + struct.unpack(">H", b[i + 2 : i + 4])[0]
    return None


def _bmp(b) -> ImageHeader | None:
    if len(b) < 26:
        return None
    dib = struct.unpack("<I", b[14:18])[0]
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        width, height, bits = struct.unpack("<HH2xH", b[18:26])
    elif dib >= 40 and len(b) >= 30:
        width, height, _, bits = struct.unpack("<iiHH", b[18:30])
    else:
        return None
    return ImageHeader("bmp", width, abs(height), {16: 3, 24: 3, 32: 4}.get(bits))  # ≤ 8 bits: a palette


def _tiff(b) -> ImageHeader | None:
    e = "<" if bytes(b[:2]) == b"II" else ">"
    offset = struct.unpack(e + "I", b[4:8])[0]
    if offset + 2 > len(b):
        return None
    tags: dict[int, int] = {}
    for k in range(struct.unpack(e + "H", b[offset : offset + 2])[0]):  # the first page's entries
        p = offset + 2 + 12 * k
        if p + 12 > len(b):
            return None
        tag, kind = struct.unpack(e + "HH", b[p : p + 4])
        if tag in (256, 257, 262, 277) and kind in (3, 4):  # width, height, photometric, samples; SHORT/LONG
            fmt, end = ("H", p + 10) if kind == 3 else ("I", p + 12)
            tags[tag] = struct.unpack(e + fmt, b[p + 8 : end])[0]
    if 256 not in tags or 257 not in tags:
        return None
    channels = 3 if tags.get(262) == 3 else tags.get(277, 1)  # photometric 3: a palette, decoded to colour
    return ImageHeader("tiff", tags[256], tags[257], channels)


def read_header(data) -> ImageHeader | None:
    """The header of an encoded image (bytes-like: the whole file or its first bytes), or None when the
    format is not PNG, JPEG, BMP or TIFF, the bytes end before the size, or the size is not positive.

    Pure Python and a few hundred bytes of work, so a size can be checked before anything is decoded.
    """
    b = memoryview(data).cast("B")
    head = bytes(b[:8])
    try:
        if head == b"\x89PNG\r\n\x1a\n":
            header = _png(b)
        elif head[:2] == b"\xff\xd8":
            header = _jpeg(b)
        elif head[:2] == b"BM":
            header = _bmp(b)
        elif head[:4] in (b"II*\x00", b"MM\x00*"):
            header = _tiff(b)
        else:
            header = None
    except struct.error:  # a length field pointing past the end
        return None
    if header is None or header.width <= 0 or header.height <= 0:
        return None
    return header


def read_image_header(path: str | Path) -> ImageHeader | None:
    """``read_header`` of a file, reading only as much as the header needs: its first HEADER_BYTES, then
    more (up to the whole file) only when those do not hold the size (a JPEG after a large EXIF block, a
    TIFF whose directory is at the end). None when the file is unreadable or its format unknown."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(HEADER_BYTES)
            header = read_header(data)
            while header is None and data.startswith((b"\xff\xd8", b"II*\x00", b"MM\x00*")):
                more = fh.read(len(data) * 8)  # 4 KiB, 36 KiB, 292 KiB, ...
                if not more:
                    break
                data += more
                header = read_header(data)
    except OSError:
        return None
    return header


def max_image_pixels() -> int:
    """The pixel limit in force: the environment's EDGE_INSPECT_MAX_IMAGE_PIXELS when set (a whole number
    ≥ 1, e.g. 100000000 or 100_000_000), else MAX_IMAGE_PIXELS. ConfigError for an unusable value."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV} must be a whole number of pixels ≥ 1, got {raw!r}")
    return value


def _too_big(what: str, width: int, height: int, limit: int) -> ImageError:
    return ImageError(f"image {what} is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the "
                      f"limit of {limit / 1e6:.1f} megapixels; refused before decoding (raise it with "
                      f"{MAX_PIXELS_ENV})")


def check_image_size(data, what: str, max_pixels: int | None = None) -> ImageHeader | None:
    """Refuse an encoded image (bytes-like) whose header declares more than ``max_pixels`` pixels (None: the
    limit in force, ``max_image_pixels()``), before it is decoded: ImageError naming ``what`` (the file).

    Returns the header, or None for a format ``read_header`` does not know (the decoder then decides;
    ``load_image`` checks the decoded size as well). Call it with the file's bytes before cv2.imdecode.
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    header = read_header(data)
    if header is not None and header.pixels > limit:
        raise _too_big(what, header.width, header.height, limit)
    return header


# ---------------------------------------------------------------------------------------------
# decoding


def _decode(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode a file with IMREAD_UNCHANGED; ImageError naming the file if it cannot be read or declares
    more pixels than the limit (checked on the header, before decoding)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: also works for non-ASCII paths
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise ImageError(f"cannot decode image {path}: file is empty")
    limit = max_image_pixels() if max_pixels is None else max_pixels
    check_image_size(data, str(path), limit)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"cannot decode image {path}: {exc}") from exc
    if image is None:
        raise ImageError(f"cannot decode image {path}: unreadable, truncated or unsupported format")
    if image.shape[0] * image.shape[1] > limit:  # a format without a header parser
        raise _too_big(str(path), image.shape[1], image.shape[0], limit)
    return image


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise ImageError(f"image {path} has unsupported pixel type {image.dtype} (need 8- or 16-bit integers)")


def load_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB. Grayscale becomes 3 equal channels, alpha is dropped,
    16-bit is scaled to 8-bit (>> 8). Unreadable or truncated files, and files of more than ``max_pixels``
    pixels (None: ``max_image_pixels()``, checked before decoding), raise ImageError."""
    path = Path(path)
    image = _to_uint8(_decode(path, max_pixels), path)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"image {path} has unsupported shape {image.shape} (need 1, 3 or 4 channels)")


def load_mask(path: str | Path, shape: tuple[int, ...] | None = None,
              max_pixels: int | None = None) -> np.ndarray:
    """Read a mask as (H, W) bool (pixel > 127). ``shape``: the image's (H, W) (extra dims ignored);
    a mask of another size raises DataError; it is never resized. ``max_pixels`` as for load_image."""
    path = Path(path)
    mask = _to_uint8(_decode(path, max_pixels), path)
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

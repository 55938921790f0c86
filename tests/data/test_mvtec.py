"""MVTec AD folder loader: layout, sorting, masks, image decoding, the pixel limit, headers, fingerprint."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspect.data.mvtec import (
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    ImageHeader,
    MVTecCategory,
    Sample,
    check_image_size,
    fingerprint,
    load_image,
    load_mask,
    max_image_pixels,
    read_header,
    read_image_header,
)
from edge_inspect.errors import ConfigError, DataError, ImageError

REAL_ROOT = Path("/work/shared/data")
REAL_CATEGORY = "magnetic_tile"


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _mask(h: int = 16, w: int = 20) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:8, 5:9] = 255
    return m


@pytest.fixture()
def category(tmp_path) -> Path:
    """A tiny category 'part': 3 train images, test/good 2, test/crack 2, test/dent 1 (masks for all)."""
    cat = tmp_path / "part"
    rgb = np.full((16, 20, 3), 100, np.uint8)
    for name in ("002.png", "000.png", "001.jpg"):  # written out of order on purpose
        _write(cat / "train" / "good" / name, rgb)
    (cat / "train" / "good" / "notes.txt").write_text("not an image")
    (cat / "train" / "good" / ".hidden.png").write_bytes(b"junk")
    for name in ("001.png", "000.png"):
        _write(cat / "test" / "good" / name, rgb)
    for kind, names in (("crack", ("001.png", "000.png")), ("dent", ("000.png",))):
        for name in names:
            _write(cat / "test" / kind / name, rgb)
            _write(cat / "ground_truth" / kind / f"{Path(name).stem}_mask.png", _mask())
    return cat


def test_train_samples_sorted_good_only(category):
    samples = MVTecCategory(category.parent, "part").train_samples()
    assert [s.rel_path for s in samples] == ["train/good/000.png", "train/good/001.jpg", "train/good/002.png"]
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in samples)
    assert all(s.path.is_file() for s in samples)


def test_test_samples_sorted_by_type_then_name_with_masks(category):
    cat = MVTecCategory(category.parent, "part")
    samples = cat.test_samples()
    assert [s.rel_path for s in samples] == [
        "test/crack/000.png",
        "test/crack/001.png",
        "test/dent/000.png",
        "test/good/000.png",
        "test/good/001.png",
    ]
    assert [s.label for s in samples] == [1, 1, 1, 0, 0]
    assert samples[1].mask_path == category / "ground_truth" / "crack" / "001_mask.png"
    assert all(s.mask_path is None for s in samples if s.defect_type == "good")
    assert cat.defect_types() == ["crack", "dent"]
    assert cat.has_masks()
    assert cat.path == category


def test_missing_mask_is_named_or_tolerated(category):
    (category / "ground_truth" / "crack" / "001_mask.png").unlink()
    cat = MVTecCategory(category.parent, "part")
    with pytest.raises(DataError) as err:
        cat.test_samples()
    assert "test/crack/001.png" in str(err.value)
    assert "ground_truth/crack/001_mask.png" in str(err.value)
    lenient = {s.rel_path: s for s in cat.test_samples(require_masks=False)}
    assert lenient["test/crack/001.png"].mask_path is None
    assert lenient["test/crack/000.png"].mask_path is not None


def test_has_masks_false_without_ground_truth(category):
    import shutil

    shutil.rmtree(category / "ground_truth")
    assert not MVTecCategory(category.parent, "part").has_masks()


@pytest.mark.parametrize(
    "breakage, phrase",
    [("no_category", "does not exist"), ("no_train", "train/good"), ("empty_train", "no images")],
)
def test_category_errors(category, breakage, phrase):
    import shutil

    name = "part"
    if breakage == "no_category":
        name = "missing"
    elif breakage == "no_train":
        shutil.rmtree(category / "train")
    else:
        for p in (category / "train" / "good").iterdir():
            p.unlink()
    with pytest.raises(DataError, match=phrase):
        MVTecCategory(category.parent, name)


def test_no_test_folder_is_an_error(category):
    import shutil

    shutil.rmtree(category / "test")
    with pytest.raises(DataError, match="no test folder"):
        MVTecCategory(category.parent, "part").test_samples()


def test_load_image_colour_order_gray_16bit_alpha(tmp_path):
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR order
    img = load_image(_write(tmp_path / "red.png", bgr))
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    assert (img[:, :, 0] == 200).all() and (img[:, :, 1:] == 0).all()

    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    img = load_image(_write(tmp_path / "gray.png", gray))
    assert img.shape == (5, 7, 3)
    assert (img[:, :, 0] == gray).all() and (img[:, :, 2] == gray).all()

    deep = np.full((5, 7), 0xAB12, np.uint16)
    img = load_image(_write(tmp_path / "deep.png", deep))
    assert img.dtype == np.uint8 and (img == 0xAB).all()

    bgra = np.zeros((5, 7, 4), np.uint8)
    bgra[:, :, 0] = 50  # blue
    bgra[:, :, 3] = 10  # alpha is dropped, not blended
    img = load_image(_write(tmp_path / "alpha.png", bgra))
    assert img.shape == (5, 7, 3) and (img[:, :, 2] == 50).all() and (img[:, :, 0] == 0).all()


@pytest.mark.parametrize("content", ["truncated", "empty", "missing", "text"])
def test_load_image_unreadable_names_file(tmp_path, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
        path.write_bytes(buf.tobytes()[: len(buf) // 2])
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("hello")
    with pytest.raises(ImageError, match="bad.png"):
        load_image(path)


def test_load_mask_threshold_and_shape_check(tmp_path):
    m = np.zeros((6, 8), np.uint8)
    m[1, 1] = 128
    m[2, 2] = 127
    m[3, 3] = 255
    path = _write(tmp_path / "m_mask.png", m)
    mask = load_mask(path)
    assert mask.dtype == bool and mask.shape == (6, 8)
    assert mask.sum() == 2 and mask[1, 1] and not mask[2, 2]
    assert load_mask(path, shape=(6, 8, 3)).sum() == 2  # an image's shape is accepted
    with pytest.raises(DataError) as err:
        load_mask(path, shape=(8, 6))
    assert "m_mask.png" in str(err.value) and "6x8" in str(err.value) and "8x6" in str(err.value)


# ---------------------------------------------------------------- headers and the pixel limit


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit grey) but holds no pixel data: only a decoder would find out."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_header_gives_size_and_channels_without_decoding(ext, channels):
    shape = (37, 53) if channels == 1 else (37, 53, channels)
    ok, buf = cv2.imencode(ext, np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    assert ok
    header = read_header(buf)
    assert (header.width, header.height) == (53, 37)
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    stored = 1 if decoded.ndim == 2 else decoded.shape[2]
    if ext == ".bmp" and channels == 1:
        assert header.channels is None  # an 8-bit BMP is a palette: grey or colour, the header cannot say
    else:
        assert header.channels == stored


def test_jpeg_size_after_a_large_exif_block_is_found(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))
    data = buf.tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", 60002) + b"Exif\x00\x00" + bytes(59994)  # 60 KB before the frame header
    path = tmp_path / "exif.jpg"
    path.write_bytes(data[:2] + app1 + data[2:])
    assert read_header(path.read_bytes()[:4096]) is None  # not in the first bytes
    assert read_image_header(path) == ImageHeader("jpeg", 40, 30, 3)
    assert load_image(path).shape == (30, 40, 3)


@pytest.mark.parametrize("data", [b"", b"junk", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00", b"BM" + bytes(10),
                                  b"II*\x00\xff\xff\xff\xff", b"MM\x00*\x00\x00\x00\x08\x00\x05",
                                  b"\x89PNG\r\n\x1a\n" + bytes(30)])
def test_unknown_or_broken_headers_give_none(data):
    assert read_header(data) is None


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(16000, 16000))  # 1.3 GB of RGB once decoded
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert time.perf_counter() - t0 < 0.5
    msg = str(err.value)
    assert "huge.png" in msg and "16000x16000" in msg and "refused before decoding" in msg and MAX_PIXELS_ENV in msg
    assert len(msg.splitlines()) == 1
    with pytest.raises(ImageError, match="16000x16000"):
        load_mask(path)
    assert MAX_IMAGE_PIXELS == 8192 * 8192 and max_image_pixels() == MAX_IMAGE_PIXELS


def test_pixel_limit_from_the_environment_or_a_parameter(tmp_path, monkeypatch):
    path = _write(tmp_path / "img.png", np.zeros((16, 20, 3), np.uint8))  # 320 pixels
    assert load_image(path, max_pixels=320).shape == (16, 20, 3)
    with pytest.raises(ImageError, match="20x16"):
        load_image(path, max_pixels=319)
    monkeypatch.setenv(MAX_PIXELS_ENV, "300")
    assert max_image_pixels() == 300
    with pytest.raises(ImageError, match="above the limit"):
        load_image(path)
    assert load_image(path, max_pixels=1000).shape == (16, 20, 3)  # the parameter wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "100_000_000")
    assert max_image_pixels() == 100_000_000
    for bad in ("lots", "0", "-5", "1e8"):
        monkeypatch.setenv(MAX_PIXELS_ENV, bad)
        with pytest.raises(ConfigError, match=MAX_PIXELS_ENV):
            max_image_pixels()


def test_check_image_size_on_bytes_and_formats_without_a_header_parser(tmp_path):
    data = _png_header_only(100, 50)
    assert check_image_size(data, "cam0 frame", max_pixels=5000) == ImageHeader("png", 100, 50, 1)
    with pytest.raises(ImageError, match="cam0 frame is 100x50"):
        check_image_size(data, "cam0 frame", max_pixels=4999)
    pgm = b"P5\n30 20\n255\n" + bytes(600)  # a format read_header does not know: checked after decoding
    assert check_image_size(pgm, "x.pgm", max_pixels=10) is None
    path = tmp_path / "x.png"
    path.write_bytes(pgm)
    assert load_image(path, max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageError, match="30x20"):
        load_image(path, max_pixels=599)


def test_fingerprint_order_independent_and_sensitive(category):
    cat = MVTecCategory(category.parent, "part")
    samples = cat.test_samples()
    fp = fingerprint(samples)
    assert len(fp) == 64 and fp == fingerprint(list(reversed(samples)))
    assert fp != fingerprint(samples[:-1])
    # A changed file size changes the fingerprint (contents are not hashed, sizes are).
    _write(
        category / "test" / "good" / "000.png",
        np.random.default_rng(1).integers(0, 255, (16, 20, 3), np.uint8),
    )
    assert fingerprint(cat.test_samples()) != fp
    assert fingerprint([]) != fp


def test_sample_is_a_plain_dataclass():
    s = Sample(
        path=Path("/x/test/good/0.png"),
        defect_type="good",
        label=0,
        mask_path=None,
        rel_path="test/good/0.png",
    )
    assert s.label == 0 and s.mask_path is None


@pytest.mark.skipif(
    not (REAL_ROOT / REAL_CATEGORY).is_dir(), reason="real data set /work/shared/data/magnetic_tile absent"
)
def test_real_magnetic_tile_category():
    cat = MVTecCategory(REAL_ROOT, REAL_CATEGORY)
    train, test = cat.train_samples(), cat.test_samples()
    assert len(train) > 0 and len(test) > 0
    assert cat.has_masks() and "good" not in cat.defect_types() and cat.defect_types()
    defects = [s for s in test if s.label == 1]
    assert defects and all(s.mask_path is not None and s.mask_path.is_file() for s in defects)
    for s in defects[:: max(1, len(defects) // 5)]:
        img = load_image(s.path)
        mask = load_mask(s.mask_path, img.shape)
        assert img.ndim == 3 and img.shape[2] == 3 and mask.any()

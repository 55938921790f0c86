"""dir:// and file://: sorted order, loop, 16-bit and grayscale images, bad files skipped and counted."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edge_inspect.camera.base import EndOfStream
from edge_inspect.camera.files import DirSource, read_image_file
from edge_inspect.camera.settings import CameraSettings
from edge_inspect.camera.uri import open_source
from edge_inspect.errors import ImageError


def _png(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def _read_all(src, limit=50):
    out = []
    with src:
        try:
            while len(out) < limit:
                f = src.read(1.0)
                if f is not None:
                    out.append(f)
        except EndOfStream:
            pass
    return out


@pytest.fixture
def mixed_dir(tmp_path):
    """a: BGR 8-bit, b: garbage .jpg, c: mono 16-bit, d: truncated PNG, e: gray 8-bit, f: BGRA, g: truncated JPEG."""
    rng = np.random.default_rng(0)
    _png(tmp_path / "a.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    _png(tmp_path / "c.png", (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100))
    whole = cv2.imencode(".png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))[1].tobytes()
    (tmp_path / "d.png").write_bytes(whole[: len(whole) // 2])
    _png(tmp_path / "e.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    _png(tmp_path / "f.png", rng.integers(0, 255, (20, 30, 4), dtype=np.uint8))
    jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    (tmp_path / "g.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    return tmp_path


def test_dir_skips_bad_files_counts_and_names_them(mixed_dir, caplog):
    src = open_source(CameraSettings(uri=f"dir://{mixed_dir}"))
    with caplog.at_level(logging.WARNING, logger="edge_inspect.camera.files"):
        frames = _read_all(src)
    names = [f.meta["path"].rsplit("/", 1)[1] for f in frames]
    assert names == ["a.png", "c.png", "e.png", "f.png"]
    # Each bad file used up its sequence number: the pipeline counts it as a dropped frame.
    assert [f.seq for f in frames] == [0, 2, 4, 5]
    assert src.raw.bad_files == 3 and src.raw.bad_names == ["b.jpg", "d.png", "g.jpg"]
    assert src.status()["bad_frames"] == 3
    for bad in ("b.jpg", "d.png", "g.jpg"):
        assert any(bad in r.getMessage() for r in caplog.records), bad


def test_dir_images_keep_depth_and_become_frame_shapes(mixed_dir):
    frames = {f.meta["path"].rsplit("/", 1)[1]: f.image for f in _read_all(open_source(CameraSettings(uri=f"dir://{mixed_dir}")))}
    assert frames["a.png"].shape == (20, 30, 3) and frames["a.png"].dtype == np.uint8
    c = frames["c.png"]
    assert c.shape == (20, 30) and c.dtype == np.uint16
    assert np.array_equal(c, np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)  # values survive
    assert frames["e.png"].shape == (20, 30) and frames["e.png"].dtype == np.uint8
    assert frames["f.png"].shape == (20, 30, 3)  # alpha dropped


def test_sixteen_bit_colour_keeps_its_top_byte(tmp_path):
    img = np.full((8, 8, 3), 0xABCD, np.uint16)
    out = read_image_file(_png(tmp_path / "x.png", img))
    assert out.dtype == np.uint8 and int(out[0, 0, 0]) == 0xAB


def test_truncated_png_is_an_image_error_naming_the_file(tmp_path):
    whole = cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(whole[:-12])
    with pytest.raises(ImageError, match="cut.png"):
        read_image_file(tmp_path / "cut.png")


def test_dir_sorted_loop_continues_the_sequence(tmp_path):
    for name, v in (("2.png", 20), ("1.png", 10), ("3.png", 30)):
        _png(tmp_path / name, np.full((4, 4), v, np.uint8))
    src = open_source(CameraSettings(uri=f"dir://{tmp_path}?loop=1"))
    with src:
        frames = [src.read(1.0) for _ in range(7)]
    assert [int(f.image[0, 0]) for f in frames] == [10, 20, 30, 10, 20, 30, 10]
    assert [f.seq for f in frames] == list(range(7))


def test_dir_all_bad_with_loop_times_out_instead_of_spinning(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    src = DirSource(str(tmp_path), loop=True)
    with src:
        assert src.read(0.05) is None
    assert src.bad_files >= 1


def test_dir_software_trigger_one_image_per_part(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", np.full((4, 4), i, np.uint8))
    src = open_source(CameraSettings(uri=f"dir://{tmp_path}", trigger="software"))
    with src:
        assert src.read(0.05) is None
        src.trigger("A")
        f = src.read(1.0)
        assert (f.part_id, int(f.image[0, 0])) == ("A", 0)
        assert src.read(0.05) is None


def test_file_image_and_video(tmp_path):
    img = _png(tmp_path / "one.png", np.full((10, 12), 7, np.uint8))
    frames = _read_all(open_source(CameraSettings(uri=f"file://{img}")))
    assert len(frames) == 1 and frames[0].image.shape == (10, 12)
    looped = open_source(CameraSettings(uri=f"file://{img}?loop=1"))
    with looped:
        assert [looped.read(1.0).seq for _ in range(3)] == [0, 1, 2]

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    frames = _read_all(open_source(CameraSettings(uri=f"file://{video}")))
    assert [f.seq for f in frames] == list(range(5))
    assert frames[0].image.shape == (24, 32, 3)
    means = [float(f.image.mean()) for f in frames]
    assert means == pytest.approx([0, 40, 80, 120, 160], abs=6)  # JPEG-compressed, in order


def test_dir_folder_gone_or_emptied_is_a_lost_camera_and_open_relists(tmp_path, caplog):
    from edge_inspect.errors import CameraError

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"{i}.png", np.full((4, 4), 10 * (i + 1), np.uint8))
    src = DirSource(str(folder), loop=True)
    src.open()
    assert int(src.read(1.0).image[0, 0]) == 10
    folder.rename(tmp_path / "away")
    with caplog.at_level(logging.WARNING, logger="edge_inspect.camera.files"):
        with pytest.raises(CameraError, match="folder not found"):
            src.read(1.0)
    assert src.bad_files == 0 and "skipped bad image" not in caplog.text  # not a run of bad files
    src.close()
    with pytest.raises(CameraError, match="folder not found"):
        src.open()
    (tmp_path / "away").rename(folder)
    _png(folder / "3.png", np.full((4, 4), 40, np.uint8))  # open lists the folder afresh
    src.open()
    assert src.describe()["images"] == 4
    assert [int(src.read(1.0).image[0, 0]) for _ in range(4)] == [20, 30, 40, 10]  # resumes where it stopped
    for p in folder.iterdir():  # emptied, folder kept
        p.unlink()
    with pytest.raises(CameraError, match="no images"):
        src.read(1.0)
    src.close()
    with pytest.raises(CameraError, match="no images"):
        src.open()


def test_every_file_ends_as_a_frame_or_a_counted_gap_even_the_first_and_the_last(tmp_path):
    """15 files, bad ones first, in the middle and last: delivered + gaps == 15 (the last one used to be lost)."""
    bad = {0, 4, 7, 9, 14}
    for i in range(15):
        path = tmp_path / f"{i:02d}.png"
        if i in bad:
            path.write_bytes(b"not a png")
        else:
            _png(path, np.full((8, 8), 10 + i, np.uint8))
    src = open_source(CameraSettings(uri=f"dir://{tmp_path}"))
    frames = _read_all(src)
    st = src.status()
    assert [f.seq for f in frames] == [i for i in range(15) if i not in bad]  # file k is seq k
    assert len(frames) + st["gaps"] == 15 and st["gaps"] == 5 and st["bad_frames"] == 5


def test_file_uri_naming_a_folder_says_so_and_suggests_dir(tmp_path):
    from edge_inspect.errors import ConfigError

    with pytest.raises(ConfigError, match=r"is a folder, not a file; to read its images use dir://"):
        open_source(CameraSettings(uri=f"file://{tmp_path}/"))


def test_recorded_sources_and_their_probe(tmp_path):
    _png(tmp_path / "a.png", np.full((4, 4), 9, np.uint8))
    src = DirSource(str(tmp_path))
    assert src.recorded and not src.live and src.probe() is True
    (tmp_path / "a.png").unlink()
    assert src.probe() is False  # no images: not back yet


def test_a_huge_image_is_refused_before_decoding(tmp_path):
    """A PNG whose header declares 16000 x 16000 pixels is a counted bad file, never 768 MB of pixels."""
    import struct
    import zlib

    from edge_inspect.camera.files import read_image_file
    from edge_inspect.errors import ImageError

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 16000, 16000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    path = tmp_path / "huge.png"
    path.write_bytes(png)
    with pytest.raises(ImageError, match="16000x16000"):
        read_image_file(path)

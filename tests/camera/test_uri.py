"""parse_uri / open_source: every scheme's accepted forms and the one-line errors for bad URIs."""

from __future__ import annotations

import pytest

from edge_inspect.camera.reconnect import ReconnectingSource
from edge_inspect.camera.settings import CameraSettings
from edge_inspect.camera.uri import make_source, open_source, parse_uri, redact
from edge_inspect.errors import ConfigError


@pytest.mark.parametrize("uri, scheme, location, query", [
    ("csi://0", "csi", "0", {}),
    ("csi://1?width=1280&height=720&fps=60&flip=2", "csi", "1", {"width": 1280, "height": 720, "fps": 60.0, "flip": 2}),
    ("v4l2:///dev/video0", "v4l2", "/dev/video0", {}),
    ("v4l2://2?fourcc=MJPG", "v4l2", "2", {"fourcc": "MJPG"}),
    ("/dev/video1", "v4l2", "/dev/video1", {}),
    ("0", "v4l2", "0", {}),
    ("rtsp://10.0.0.9:8554/cam?codec=h265&latency_ms=50", "rtsp", "rtsp://10.0.0.9:8554/cam",
     {"codec": "h265", "latency_ms": 50}),
    ("file://video.mp4", "file", "video.mp4", {}),
    ("file:///abs/dir/image.png?loop=1", "file", "/abs/dir/image.png", {"loop": True}),
    ("dir://path/to/images?loop=1&fps=5", "dir", "path/to/images", {"loop": True, "fps": 5.0}),
    ("dir:///data/my%20images", "dir", "/data/my images", {}),
    ("synthetic://", "synthetic", "", {}),
    ("synthetic://?fps=0&defect_rate=0.5&count=7&seed=3&size=64", "synthetic", "",
     {"fps": 0.0, "defect_rate": 0.5, "count": 7, "seed": 3, "size": 64}),
    ("gige://192.168.10.20?exposure_us=800&gain_db=1.5&pixel_format=Mono8&trigger=software", "gige", "192.168.10.20",
     {"exposure_us": 800.0, "gain_db": 1.5, "pixel_format": "Mono8", "trigger": "software"}),
    ("gige://line3-cam.local?trigger=hardware&line=Line1", "gige", "line3-cam.local",
     {"trigger": "hardware", "line": "Line1"}),
])
def test_parse_accepts(uri, scheme, location, query):
    p = parse_uri(uri)
    assert (p.scheme, p.location, p.query) == (scheme, location, query)


def test_rtsp_keeps_the_cameras_own_query_and_masks_the_password():
    p = parse_uri("rtsp://admin:s3cret@10.0.0.9/Streaming/Channels/101?channel=2&transportmode=unicast&threads=2")
    assert p.location == "rtsp://admin:s3cret@10.0.0.9/Streaming/Channels/101?channel=2&transportmode=unicast"
    assert p.query == {"threads": 2}
    assert "s3cret" not in p.safe and "s3cret" not in repr(p) and "admin:***@" in p.safe
    with pytest.raises(ConfigError) as err:
        parse_uri("rtsp://admin:s3cret@10.0.0.9/x?codec=vp9")
    assert "s3cret" not in str(err.value) and "codec" in str(err.value)
    assert redact("rtsp://host/x") == "rtsp://host/x"


@pytest.mark.parametrize("uri, words", [
    ("foo://bar", ["foo://bar", "unknown scheme"]),
    ("http://cam/stream", ["http://cam/stream", "unknown scheme"]),
    ("", ["empty"]),
    ("synthetic://?fps=fast", ["synthetic://?fps=fast", "fps"]),
    ("synthetic://?fps=-1", ["fps", ">= 0"]),
    ("synthetic://?defect_rate=1.5", ["defect_rate"]),
    ("synthetic://?colour=red", ["unknown option 'colour'"]),
    ("synthetic://?fps=1&fps=2", ["given twice"]),
    ("synthetic://somewhere", ["takes only options"]),
    ("dir://imgs?loop=maybe", ["loop"]),
    ("dir://", ["needs a path"]),
    ("csi://front", ["sensor number"]),
    ("v4l2://camera", ["v4l2://camera", "needs a device"]),
    ("gige://", ["IP address"]),
    ("gige://Basler_acA1300#1", ["gige://Basler_acA1300"]),
    ("gige://Basler_acA1300", ["discovery"]),
    ("gige://10.0.0.5?trigger=sometimes", ["trigger", "software"]),
    ("gige://10.0.0.5?exposure_us=0", ["exposure_us"]),
    ("rtsp:///nohost", ["needs a host"]),
])
def test_parse_rejects_with_one_line_naming_the_uri(uri, words):
    with pytest.raises(ConfigError) as err:
        parse_uri(uri)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_bare_paths_are_files_or_folders(tmp_path):
    assert parse_uri(str(tmp_path)).scheme == "dir"
    assert parse_uri(str(tmp_path / "clip.mp4")).scheme == "file"


def test_open_source_wraps_and_applies_uri_over_settings():
    settings = CameraSettings(uri="synthetic://?fps=0&size=64", camera_id="line7", fps=5.0)
    src = open_source(settings)
    assert isinstance(src, ReconnectingSource) and src.camera_id == "line7"
    assert src.raw.fps == 0.0 and src.raw.size == 64  # the URI's fps wins over settings.fps
    raw = make_source(parse_uri("synthetic://"), CameraSettings(fps=12.0))
    assert raw.fps == 12.0  # settings apply where the URI is silent


@pytest.mark.parametrize("uri", ["synthetic://", "dir://{tmp}"])
def test_hardware_trigger_needs_a_gige_camera(uri, tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="hardware"):
        open_source(CameraSettings(uri=uri.format(tmp=tmp_path), trigger="hardware"))


def test_missing_file_and_folder_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        open_source(CameraSettings(uri=f"file://{tmp_path}/none.mp4"))
    with pytest.raises(ConfigError, match="folder not found"):
        open_source(CameraSettings(uri=f"dir://{tmp_path}/none"))
    with pytest.raises(ConfigError, match="no images"):
        open_source(CameraSettings(uri=f"dir://{tmp_path}"))


def test_gige_pixel_format_outside_the_supported_set_is_refused_before_opening():
    with pytest.raises(ConfigError, match="Mono12Packed"):
        open_source(CameraSettings(uri="gige://10.0.0.5?pixel_format=Mono12Packed"))

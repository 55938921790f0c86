"""OpenCV sources without a device: backend detection, Jetson GStreamer pipelines, GigE pixel conversions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_inspect.camera.gige import GigESource
from edge_inspect.camera.opencv_source import csi_pipeline, opencv_video_backends, rtsp_pipeline
from edge_inspect.camera.settings import CameraSettings
from edge_inspect.camera.uri import open_source
from edge_inspect.errors import ConfigError


def test_backends_match_the_build_information():
    caps = opencv_video_backends()
    info = cv2.getBuildInformation()
    assert caps["version"] == cv2.__version__
    assert caps["ffmpeg"] == ("FFMPEG:                      YES" in info)
    assert isinstance(caps["gstreamer"], bool)


def test_csi_pipeline_asks_nvargus_for_size_and_rate_and_ends_in_bgr_appsink():
    p = csi_pipeline(1, 1280, 720, 60, flip=2)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=1280,height=720,framerate=60/1" in p and "flip-method=2" in p
    assert p.endswith("video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")


def test_rtsp_pipeline_hardware_and_software_decoding():
    hw = rtsp_pipeline('rtsp://u:p@cam/x"y', "h265", 50, hardware=True, transport="tcp")
    assert 'location="rtsp://u:p@cam/x\\"y"' in hw and "latency=50" in hw and "protocols=tcp" in hw
    assert "rtph265depay ! h265parse ! nvv4l2decoder" in hw
    sw = rtsp_pipeline("rtsp://cam/x", hardware=False)
    assert "avdec_h264" in sw and "nvv4l2decoder" not in sw


def test_rtsp_backend_gstreamer_needs_gstreamer_in_opencv():
    if opencv_video_backends()["gstreamer"]:
        pytest.skip("this OpenCV has GStreamer")
    from edge_inspect.errors import DependencyError

    with pytest.raises(DependencyError, match="no GStreamer"):
        open_source(CameraSettings(uri="rtsp://127.0.0.1/x?backend=gstreamer"))


def test_opencv_sources_refuse_hardware_trigger():
    with pytest.raises(ConfigError, match="hardware"):
        open_source(CameraSettings(uri="rtsp://127.0.0.1/x", trigger="hardware"))


def _gige(fmt: str) -> GigESource:
    src = GigESource("10.0.0.5")
    src._format = fmt
    return src


def test_gige_mono12_fills_the_16_bit_range():
    raw = np.array([[0, 4095], [2048, 1]], "<u2").tobytes()
    img = _gige("Mono12")._convert(raw, 2, 2)
    assert img.dtype == np.uint16 and img.tolist() == [[0, 4095 << 4], [2048 << 4, 1 << 4]]


def test_gige_rgb8_becomes_bgr_and_bayer_is_demosaiced():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    img = _gige("RGB8")._convert(rgb.tobytes(), 4, 4)
    assert img.shape == (4, 4, 3) and img[0, 0].tolist() == [0, 0, 200]
    # A red-only BayerRG8 mosaic (R at even rows/cols) must come out red in BGR.
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200
    bgr = _gige("BayerRG8")._convert(mosaic.tobytes(), 8, 8)
    assert bgr.shape == (8, 8, 3) and bgr[2:6, 2:6, 2].mean() > 150 and bgr[2:6, 2:6, :2].max() < 50


def test_gige_sequence_follows_frame_ids_across_the_16_bit_wrap():
    src = _gige("Mono8")
    seqs = []
    for fid in (65533, 65534, 65535, 1, 2, 5):
        src._advance_seq(fid)
        seqs.append(src._seq)
    assert seqs == [0, 1, 2, 3, 4, 7]  # 0 is skipped by the camera; 3 and 4 were lost


def test_missing_v4l2_device_fails_at_once_without_asking_opencv(tmp_path):
    from edge_inspect.camera.opencv_source import OpenCVSource, v4l2_device
    from edge_inspect.camera.uri import make_source, parse_uri
    from edge_inspect.errors import CameraError

    assert v4l2_device("3") == "/dev/video3" and v4l2_device("/dev/video7") == "/dev/video7"
    src = make_source(parse_uri("v4l2:///dev/video99"), CameraSettings())
    assert isinstance(src, OpenCVSource) and src.probe() is False
    with pytest.raises(CameraError, match="no such device /dev/video99"):
        src.open()
    assert src._thread is None  # no grabber thread, no capture object was ever made


def test_a_failed_open_is_reported_only_after_the_grabber_released_the_capture():
    """The capture object lives and dies in the grabber thread; open() raises after that thread is gone, so
    nothing of OpenCV is left for another thread or the interpreter's exit to destroy (the abort)."""
    import threading

    from edge_inspect.camera.uri import make_source, parse_uri
    from edge_inspect.errors import CameraError

    src = make_source(parse_uri("v4l2:///dev/null"), CameraSettings(open_timeout_s=2.0))  # exists, is no camera
    for _ in range(3):
        with pytest.raises(CameraError, match="cannot open"):
            src.open()
        assert not [t for t in threading.enumerate() if t.name.startswith("grab-")]


def test_rtsp_probe_is_a_tcp_connect():
    import socket

    from edge_inspect.camera.uri import make_source, parse_uri

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        src = make_source(parse_uri(f"rtsp://127.0.0.1:{port}/line"), CameraSettings())
        assert src.address == ("127.0.0.1", port) and src.probe() is True
    assert src.probe() is False  # nobody listens any more

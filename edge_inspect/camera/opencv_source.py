"""csi://, v4l2:// and rtsp:// through OpenCV's VideoCapture.

Which OpenCV: PyPI's opencv-python wheels have FFmpeg and V4L2 but no GStreamer. JetPack's system
OpenCV has GStreamer, which csi:// (nvarguscamerasrc) and hardware RTSP decoding (nvv4l2decoder)
need. On a Jetson, do not pip-install opencv-python: it shadows the system OpenCV and csi:// stops
working. ``edge-inspect check --camera URI`` says which backends this OpenCV has.

A grabber thread reads the camera continuously and keeps only the newest frame (latest wins), so a
slow consumer never sees old frames from the driver's or FFmpeg's buffer; frames overwritten before
anyone took them are sequence gaps. Software triggers are emulated: the first frame captured after
the trigger carries the part id and untriggered frames are discarded.

The capture object lives and dies in the grabber thread: it is made, read and released (and its Python
object dropped) there, and a failed open is reported only after that, with the thread joined, so no
OpenCV object is ever destroyed by another thread or at interpreter exit. A V4L2 device node that does
not exist is refused before OpenCV is asked at all.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import CameraError, ConfigError, DependencyError
from .base import Frame, FrameSource
from .files import normalize_image
from .trigger import PendingTriggers

log = logging.getLogger(__name__)

_ENV_LOCK = threading.Lock()  # OPENCV_FFMPEG_CAPTURE_OPTIONS is process-wide; set it per open


@lru_cache(maxsize=1)
def opencv_video_backends() -> dict[str, object]:
    """{"version", "gstreamer", "ffmpeg", "v4l2"} from cv2.getBuildInformation() (the "Video I/O" part)."""
    import cv2

    info = cv2.getBuildInformation()

    def has(name: str) -> bool:
        m = re.search(rf"^\s*{name}:\s*(\S+)", info, re.MULTILINE | re.IGNORECASE)
        return bool(m) and m.group(1).upper() != "NO"

    return {"version": cv2.__version__, "gstreamer": has("GStreamer"), "ffmpeg": has("FFMPEG"),
            "v4l2": has("v4l/v4l2") or has("V4L2")}


def is_jetson() -> bool:
    """True on an NVIDIA Jetson (L4T)."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text(errors="ignore").lower()
    except OSError:
        return False


_APPSINK = "appsink drop=true max-buffers=1 sync=false"


def csi_pipeline(sensor_id: int, width: int, height: int, fps: float, flip: int = 0) -> str:
    """nvarguscamerasrc → BGR appsink, for OpenCV's CAP_GSTREAMER."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={round(fps)}/1,format=NV12 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
            f"videoconvert ! video/x-raw,format=BGR ! {_APPSINK}")


def rtsp_pipeline(url: str, codec: str = "h264", latency_ms: int = 0, hardware: bool = True,
                  transport: str | None = None, open_timeout_s: float = 5.0) -> str:
    """rtspsrc → (Jetson: nvv4l2decoder) → BGR appsink, for OpenCV's CAP_GSTREAMER."""
    quoted = url.replace("\\", "\\\\").replace('"', '\\"')
    protocols = f" protocols={transport}" if transport else ""
    src = f'rtspsrc location="{quoted}" latency={latency_ms}{protocols} tcp-timeout={int(open_timeout_s * 1e6)}'
    if hardware:
        decode = f"rtp{codec}depay ! {codec}parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert"
    else:
        decode = f"rtp{codec}depay ! {codec}parse ! avdec_{codec} ! videoconvert"
    return f"{src} ! {decode} ! video/x-raw,format=BGR ! {_APPSINK}"


def v4l2_device(location: str) -> str | None:
    """The device node of a v4l2:// location ("/dev/video2", or "2" → /dev/video2 on Linux); None elsewhere."""
    if location.isdigit():
        return f"/dev/video{int(location)}" if sys.platform.startswith("linux") else None
    return location


def rtsp_address(url: str) -> tuple[str, int] | None:
    """(host, port) of an rtsp:// URL (port 554 by default), for the reconnect probe; None when unparsable."""
    try:
        parts = urlsplit(url)
        return (parts.hostname, parts.port or 554) if parts.hostname else None
    except ValueError:
        return None


class OpenCVSource(FrameSource):
    """A live OpenCV capture read by a grabber thread.

    target: device index (int), device path, file name or GStreamer pipeline; api: cv2.CAP_* backend;
    params: open-time (property, value) pairs; props: properties set after opening (V4L2 size/fps).
    """

    live = True

    def __init__(self, target, api: int, name: str, camera_id: str = "cam0", params: tuple = (),
                 props: tuple = (), trigger: str = "free", open_timeout_s: float = 5.0,
                 ffmpeg_options: str | None = None, backend_label: str = "", device: str | None = None,
                 address: tuple[str, int] | None = None):
        if trigger not in ("free", "software"):
            raise ConfigError(f"camera URI '{name}': trigger={trigger} is not possible here; use free or software")
        self.target, self.api, self.name, self.camera_id = target, api, name, camera_id
        self.params, self.props = tuple(params), tuple(props)
        self.trigger_mode = trigger
        self.open_timeout_s = open_timeout_s
        self.ffmpeg_options = ffmpeg_options
        self.backend_label = backend_label
        self.device = device  # V4L2 device node: checked before opening, and the reconnect probe
        self.address = address  # (host, port) of a network camera: the reconnect probe's TCP connect
        self.nominal_fps: float | None = None
        self.resolution: tuple[int, int] | None = None
        self._pending = PendingTriggers()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._latest_seq = -1  # kept apart from Frame.seq, which consumers may rewrite
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0  # frames captured since open (free-run seq)
        self._delivered_seq = -1
        self._triggered_seq = 0

    # ---- construction from a URI ---------------------------------------------------------------

    @classmethod
    def from_uri(cls, parsed, settings, trigger: str) -> OpenCVSource:
        import cv2

        q = parsed.query
        caps = opencv_video_backends()
        common = {"name": parsed.safe, "camera_id": settings.camera_id, "trigger": trigger,
                  "open_timeout_s": settings.open_timeout_s}
        width = q.get("width", settings.width)
        height = q.get("height", settings.height)
        fps = q.get("fps", settings.fps)
        if parsed.scheme == "csi":
            if not caps["gstreamer"]:
                raise DependencyError(
                    f"camera URI '{parsed.safe}': csi:// needs OpenCV built with GStreamer (JetPack's system OpenCV); "
                    f"this OpenCV {caps['version']} has none"
                    + (" (a pip opencv-python wheel shadows the system one: pip uninstall opencv-python "
                       "opencv-python-headless)" if is_jetson() else " (csi:// works on a Jetson only)"))
            pipeline = csi_pipeline(int(parsed.location), width or 1920, height or 1080, fps or 30.0,
                                    int(q.get("flip", 0)))
            return cls(pipeline, cv2.CAP_GSTREAMER, backend_label="GStreamer nvarguscamerasrc", **common)
        if parsed.scheme == "v4l2":
            loc = parsed.location
            target = int(loc) if loc.isdigit() else loc
            props = []
            if "fourcc" in q:
                props.append((cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*str(q["fourcc"]))))
            if width:
                props.append((cv2.CAP_PROP_FRAME_WIDTH, width))
            if height:
                props.append((cv2.CAP_PROP_FRAME_HEIGHT, height))
            if fps:
                props.append((cv2.CAP_PROP_FPS, fps))
            props.append((cv2.CAP_PROP_BUFFERSIZE, 1))
            return cls(target, cv2.CAP_V4L2, props=tuple(props), backend_label="OpenCV V4L2",
                       device=v4l2_device(loc), **common)
        # rtsp
        backend = str(q.get("backend", "auto"))
        use_gst = backend == "gstreamer" or (backend == "auto" and caps["gstreamer"] and is_jetson())
        if use_gst:
            if not caps["gstreamer"]:
                raise DependencyError(f"camera URI '{parsed.safe}': backend=gstreamer but this OpenCV "
                                      f"{caps['version']} has no GStreamer")
            pipeline = rtsp_pipeline(parsed.location, str(q.get("codec", "h264")), int(q.get("latency_ms", 0)),
                                     hardware=is_jetson(), transport=q.get("transport"),
                                     open_timeout_s=settings.open_timeout_s)
            label = "GStreamer nvv4l2decoder" if is_jetson() else "GStreamer software decoding"
            return cls(pipeline, cv2.CAP_GSTREAMER, backend_label=label, address=rtsp_address(parsed.location),
                       **common)
        if not caps["ffmpeg"]:
            raise DependencyError(f"camera URI '{parsed.safe}': rtsp:// needs OpenCV with FFmpeg or GStreamer; "
                                  f"this OpenCV {caps['version']} has neither")
        open_ms = int(settings.open_timeout_s * 1000)
        read_ms = int(max(settings.read_timeout_s, 0.5) * 1000)
        # Open-time parameters: the timeouts only take effect here, not through cap.set later.
        params = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms,
                  cv2.CAP_PROP_N_THREADS, int(q.get("threads", 1)))
        options = f"rtsp_transport;{q['transport']}" if "transport" in q else None
        return cls(parsed.location, cv2.CAP_FFMPEG, params=params, ffmpeg_options=options,
                   backend_label="OpenCV FFmpeg", address=rtsp_address(parsed.location), **common)

    # ---- FrameSource -----------------------------------------------------------------------------

    def open(self) -> None:
        if self._thread is not None:
            self.close()
        if self.device is not None and not os.path.exists(self.device):
            raise CameraError(f"{self.name}: no such device {self.device} (camera unplugged? ls /dev/video*)")
        self._stop = threading.Event()
        self._latest, self._error, self._count = None, None, 0
        self._latest_seq = self._delivered_seq = -1
        opened = threading.Event()
        result: dict = {}
        self._thread = threading.Thread(target=self._grab_loop, args=(self._stop, opened, result),
                                        name=f"grab-{self.camera_id}", daemon=True)
        self._thread.start()
        # GStreamer and V4L2 opens have no timeout of their own: bound the wait here.
        if not opened.wait(self.open_timeout_s + 2.0):
            self._stop.set()
            self._thread = None
            raise CameraError(f"{self.name}: no answer within {self.open_timeout_s + 2.0:.0f} s while opening")
        if "error" in result:
            thread, self._thread = self._thread, None
            thread.join(timeout=2.0)  # it has released the capture already; let it end before we report
            raise CameraError(f"{self.name}: {result['error']}")
        self.nominal_fps = result.get("fps")
        self.resolution = result.get("resolution")

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3.0)  # the thread releases the capture itself, even if it returns late
        with self._cond:
            self._cond.notify_all()

    def describe(self) -> dict:
        w, h = self.resolution or (None, None)
        return {"backend": self.backend_label, "width": w, "height": h, "fps": self.nominal_fps}

    def probe(self) -> bool | None:
        """V4L2: the device node exists; RTSP: its TCP port accepts a connection; else None (cannot tell)."""
        if self.device is not None:
            return os.path.exists(self.device)
        if self.address is not None:
            try:
                with socket.create_connection(self.address, timeout=min(0.5, self.open_timeout_s)):
                    return True
            except OSError:
                return False
        return None

    def trigger(self, part_id: str | None = None) -> None:
        if self.trigger_mode != "software":
            raise CameraError(f"{self.name} runs free; set camera trigger=software to trigger frames")
        self._pending.push(part_id)

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._thread is None:
            raise CameraError(f"{self.name} is not open")
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frame, seq = self._latest, self._latest_seq
                if frame is not None and seq > self._delivered_seq:
                    self._delivered_seq = seq  # delivered now, or discarded (captured before any trigger)
                    if self.trigger_mode == "free":
                        return frame
                    picked = self._match_trigger(frame)
                    if picked is not None:
                        return picked
                if self._error is not None:
                    raise CameraError(f"{self.name}: {self._error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def _match_trigger(self, frame: Frame) -> Frame | None:
        """Emulated software trigger: the first frame captured after the oldest waiting trigger."""
        head = self._pending.peek()
        if head is None or frame.t_capture < head[1]:
            return None
        part_id, _ = self._pending.pop()
        out = Frame(frame.camera_id, self._triggered_seq, frame.t_capture, frame.t_wall, frame.image,
                    part_id=part_id, meta=frame.meta)
        self._triggered_seq += 1  # triggered mode: one seq per trigger, untriggered frames are no drops
        return out

    # ---- grabber thread --------------------------------------------------------------------------

    def _open_capture(self):
        import cv2

        if self.ffmpeg_options:
            with _ENV_LOCK:
                old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = self.ffmpeg_options
                try:
                    cap = cv2.VideoCapture(self.target, self.api, list(self.params))
                finally:
                    if old is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old
        else:
            cap = cv2.VideoCapture(self.target, self.api, list(self.params))
        return cap

    def _grab_loop(self, stop: threading.Event, opened: threading.Event, result: dict) -> None:
        import cv2

        cap = None
        try:
            try:
                cap = self._open_capture()
            except cv2.error as exc:
                result["error"] = f"OpenCV cannot open it ({str(exc).strip().splitlines()[-1]})"
                return
            if not cap.isOpened():
                result["error"] = f"OpenCV ({self.backend_label}) cannot open it (unreachable, wrong path or codec?)"
                return
            for prop, value in self.props:
                cap.set(prop, value)
            fps = cap.get(cv2.CAP_PROP_FPS)
            result["fps"] = fps if 0 < fps <= 1000 else None
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            result["resolution"] = (w, h) if w and h else None
            opened.set()
            while not stop.is_set():
                ok, image = cap.read()
                t_capture, t_wall = time.monotonic(), time.time()
                if stop.is_set():
                    break
                if not ok or image is None:
                    with self._cond:
                        self._error = "stream ended or read failed (camera unplugged or server gone?)"
                        self._cond.notify_all()
                    return
                pos = cap.get(cv2.CAP_PROP_POS_MSEC)
                meta = {"source": self.backend_label}
                if pos > 0:
                    meta["source_ts"] = pos
                frame = Frame(self.camera_id, self._count, t_capture, t_wall,
                              normalize_image(image, self.name), meta=meta)
                with self._cond:
                    self._latest, self._latest_seq = frame, self._count
                    self._count += 1
                    self._cond.notify_all()
        except Exception as exc:  # a driver error must surface as CameraError in read(), not kill silently
            log.debug("%s: grabber failed", self.name, exc_info=True)
            if not stop.is_set():
                with self._cond:
                    self._error = f"capture failed: {exc}"
                    self._cond.notify_all()
            result.setdefault("error", f"capture failed: {exc}")
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:  # releasing a broken capture: nothing left to do but log it
                    log.debug("%s: release failed", self.name, exc_info=True)
            cap = None  # the capture object dies here, in the thread that made it
            opened.set()  # only now may open() report a failure (and its caller exit)

"""gige:// — GigE Vision / GenICam cameras through Aravis 0.8 (GObject introspection).

Opened by IP address only: the device object is built directly from (local interface address,
camera address), so nothing is ever broadcast. Aravis's own ``Camera.new(id)`` would fall back to a
discovery broadcast whenever the id is not an answering address; it is deliberately not used.

Every setting this source knows is written at each open (trigger mode included), because a camera
keeps its settings across client connections: a previous session's trigger mode must not linger.
Settings left unset keep the camera's own values.

Frames: Mono8 → (H, W) uint8; Mono10/12/14/16 → (H, W) uint16 scaled to the full 16-bit range;
RGB8/BGR8 and Bayer*8 → (H, W, 3) uint8 BGR. ``seq`` follows the camera's frame (block) ids, so
frames lost on the wire or overwritten in free-run are sequence gaps.

Needs: apt gir1.2-aravis-0.8 (+ libgirepository1.0-dev libcairo2-dev to build) and
pip 'pygobject<3.51' (newer PyGObject needs girepository-2.0, absent in Debian 12 / Ubuntu 22.04).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np

from ..errors import CameraError, ConfigError, DependencyError
from .base import Frame, FrameSource
from .trigger import PendingTriggers

log = logging.getLogger(__name__)

GVCP_PORT = 3956
_MONO_BITS = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono14": 14, "Mono16": 16}
# GenICam Bayer names give the 2x2 tile from the top-left; OpenCV's *RGGB*-style aliases match them.
_BAYER = {"BayerRG8": "COLOR_BayerRGGB2BGR", "BayerBG8": "COLOR_BayerBGGR2BGR",
          "BayerGR8": "COLOR_BayerGRBG2BGR", "BayerGB8": "COLOR_BayerGBRG2BGR"}
SUPPORTED_PIXEL_FORMATS = tuple(_MONO_BITS) + ("RGB8", "BGR8") + tuple(_BAYER)


def load_aravis():
    """(Aravis, Gio, GLib) modules, or DependencyError saying what to install."""
    hint = ("apt install gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev && "
            "pip install 'pygobject<3.51'")
    try:
        import gi
    except ImportError as exc:
        raise DependencyError(f"gige:// needs PyGObject (the 'gi' module): {hint}") from exc
    try:
        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis, Gio, GLib
    except (ValueError, ImportError) as exc:
        raise DependencyError(f"gige:// needs Aravis 0.8 introspection data ({exc}): {hint}") from exc
    return Aravis, Gio, GLib


def aravis_version() -> str | None:
    """The Aravis API version the introspection data provides ("0.8"), or None when unavailable."""
    try:
        Aravis, _, _ = load_aravis()
    except DependencyError:
        return None
    return str(getattr(Aravis, "_version", "0.8"))


def resolve_ipv4(host: str) -> str:
    """Host name or address → IPv4 string (no camera traffic: DNS or /etc/hosts only)."""
    try:
        infos = socket.getaddrinfo(host, GVCP_PORT, socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise CameraError(f"gige://{host}: not an IPv4 address and not resolvable ({exc}); "
                          "gige:// opens cameras by IP only (ids would need discovery broadcasts)") from exc
    return infos[0][4][0]


def local_address_for(ip: str) -> str:
    """The local interface address the kernel would use to reach ``ip`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, GVCP_PORT))
        except OSError as exc:
            raise CameraError(f"no route to GigE camera {ip}: {exc}") from exc
        return s.getsockname()[0]


def _release(objects: list, stop: bool, name: str) -> None:
    """Stop acquisition and free [camera, stream, device]: may block for seconds on a dead camera."""
    if stop:
        try:
            objects[0].stop_acquisition()
        except Exception:  # the camera may already be gone (logged with its traceback)
            log.debug("%s: stop_acquisition failed", name, exc_info=True)
    objects.clear()  # the last references: the stream and device are finalised here, not in the caller


class GigESource(FrameSource):
    """A GigE Vision camera by IP. trigger: "free" (latest frame wins), "software" (``trigger(part_id)``
    → TriggerSoftware, one frame each, carrying the part id) or "hardware" (TriggerSource=``line``; a
    part id sent with ``trigger`` beforehand is attached to the next hardware-triggered frame)."""

    live = True

    def __init__(self, host: str, camera_id: str = "cam0", trigger: str = "free", exposure_us: float | None = None,
                 gain_db: float | None = None, pixel_format: str | None = None, width: int | None = None,
                 height: int | None = None, fps: float | None = None, line: str = "Line0", buffers: int = 8,
                 open_timeout_s: float = 5.0, name: str | None = None):
        if trigger not in ("free", "software", "hardware"):
            raise ConfigError(f"gige://{host}: unknown trigger mode {trigger!r}")
        if pixel_format is not None and pixel_format not in SUPPORTED_PIXEL_FORMATS:
            raise ConfigError(f"gige://{host}: pixel format {pixel_format!r} not supported; "
                              f"choose one of {', '.join(SUPPORTED_PIXEL_FORMATS)}")
        self.host, self.camera_id, self.trigger_mode = host, camera_id, trigger
        self.exposure_us, self.gain_db, self.pixel_format = exposure_us, gain_db, pixel_format
        self.width, self.height, self.fps, self.line = width, height, fps, line
        self.buffers, self.open_timeout_s = buffers, open_timeout_s
        self.name = name or f"gige://{host}"
        self.nominal_fps: float | None = None
        self.info: dict = {}
        self.incomplete_buffers = 0  # buffers the stream could not complete (missing packets, timeouts)
        self.lost_triggers = 0  # part ids whose frame never came (camera lost before delivering)
        self._pending = PendingTriggers()
        self._lost = threading.Event()
        self._cam = self._dev = self._stream = None
        self._signal_id = None
        self._format = "Mono8"
        self._last_fid: int | None = None
        self._seq = 0
        self._trigger_lock = threading.RLock()
        self._outstanding: tuple[str | None, float, float] | None = None  # (part id, mono, wall) fired
        self.trigger_timeout_s = max(1.0, open_timeout_s / 2)
        self.unexpected_frames = 0  # frames in software mode that no trigger asked for

    # ---- open / close ----------------------------------------------------------------------------

    def open(self) -> None:
        Aravis, Gio, GLib = load_aravis()
        if self._cam is not None:
            self.close()
        ip = resolve_ipv4(self.host)
        iface = local_address_for(ip)
        self._lost.clear()
        t0 = time.monotonic()
        try:
            dev = Aravis.GvDevice.new(Gio.InetAddress.new_from_string(iface), Gio.InetAddress.new_from_string(ip))
            cam = Aravis.Camera.new_with_device(dev)
        except GLib.Error as exc:
            raise CameraError(f"{self.name}: no GigE Vision camera answers at {ip} ({exc.message})") from exc
        self._dev, self._cam = dev, cam
        self._signal_id = dev.connect("control-lost", self._on_control_lost)
        try:
            self._configure(Aravis, cam)
            stream = cam.create_stream(None, None)
            payload = cam.get_payload()
            for _ in range(self.buffers):
                stream.push_buffer(Aravis.Buffer.new_allocate(payload))
            self._stream = stream
            cam.start_acquisition()
        except GLib.Error as exc:
            self.close()
            hint = " (is another application controlling this camera?)" if "write" in exc.message else ""
            raise CameraError(f"{self.name}: configuring the camera failed: {exc.message}{hint}") from exc
        except BaseException:
            self.close()
            raise
        self._last_fid = None
        log.info("%s: opened %s in %.0f ms (%s, %s, trigger %s)", self.name, self.info.get("model"),
                 (time.monotonic() - t0) * 1e3, self._format, self.info.get("resolution"), self.trigger_mode)

    def _configure(self, Aravis, cam) -> None:
        try:
            cam.stop_acquisition()  # a previous client may have left it running
        except Exception:  # noqa: BLE001 - not running or not stoppable: both fine here
            pass
        if self.pixel_format is not None:
            offered = list(cam.dup_available_pixel_formats_as_strings() or [])
            if offered and self.pixel_format not in offered:
                raise ConfigError(f"{self.name}: camera does not offer pixel format {self.pixel_format}; "
                                  f"it offers {', '.join(offered)}")
            cam.set_pixel_format_from_string(self.pixel_format)
        if self.width or self.height:
            _, _, w, h = cam.get_region()
            cam.set_region(0, 0, self.width or w, self.height or h)
        if self.exposure_us is not None:
            if cam.is_exposure_auto_available():
                cam.set_exposure_time_auto(Aravis.Auto.OFF)
            cam.set_exposure_time(float(self.exposure_us))
        if self.gain_db is not None:
            if not cam.is_gain_available():
                raise ConfigError(f"{self.name}: camera has no Gain feature; remove gain_db")
            if cam.is_gain_auto_available():
                cam.set_gain_auto(Aravis.Auto.OFF)
            cam.set_gain(float(self.gain_db))
        cam.set_acquisition_mode(Aravis.AcquisitionMode.CONTINUOUS)
        if self.trigger_mode == "free":
            cam.clear_triggers()
            if self.fps is not None and cam.is_frame_rate_available():
                cam.set_frame_rate(float(self.fps))
        else:
            source = "Software" if self.trigger_mode == "software" else self.line
            offered = list(cam.dup_available_trigger_sources() or [])
            if offered and source not in offered:
                raise ConfigError(f"{self.name}: camera has no trigger source {source}; it offers {', '.join(offered)}")
            cam.set_trigger(source)
        self._format = cam.get_pixel_format_as_string()
        if self._format not in SUPPORTED_PIXEL_FORMATS:
            raise ConfigError(f"{self.name}: camera delivers {self._format}, which edge-inspect cannot convert; "
                              f"set pixel_format to one of {', '.join(SUPPORTED_PIXEL_FORMATS)}")
        _, _, w, h = cam.get_region()
        free_run = self.trigger_mode == "free" and cam.is_frame_rate_available()
        self.nominal_fps = cam.get_frame_rate() if free_run else None
        self.info = {"model": f"{cam.get_vendor_name()} {cam.get_model_name()}",
                     "serial": cam.get_device_serial_number(),
                     "resolution": (w, h), "pixel_format": self._format, "fps": self.nominal_fps}

    def _on_control_lost(self, _device) -> None:
        log.warning("%s: control lost (camera unplugged, rebooted or network down)", self.name)
        self._lost.set()

    def close(self) -> None:
        cam, dev, stream, sig = self._cam, self._dev, self._stream, self._signal_id
        self._cam = self._dev = self._stream = self._signal_id = None
        if dev is not None and sig is not None:
            dev.disconnect(sig)
        if cam is not None:
            # On a dead camera every register access (AcquisitionStop, and the stream channel reset
            # when the stream is freed) times out after seconds. A helper thread does the stop and
            # drops the last references, so the caller can report the fault and reconnect at once.
            stopper = threading.Thread(target=_release, args=([cam, stream, dev], not self._lost.is_set(), self.name),
                                       daemon=True, name=f"gige-close-{self.camera_id}")
            del cam, dev, stream
            stopper.start()
            stopper.join(0.5)
        dropped = self._pending.clear() + (self._outstanding is not None)
        self._outstanding = None
        if dropped:
            self.lost_triggers += dropped
            log.warning("%s: %d triggered part(s) got no frame before the camera closed", self.name, dropped)

    def counters(self) -> dict[str, int]:
        return {"lost_triggers": self.lost_triggers, "incomplete_buffers": self.incomplete_buffers,
                "unexpected_frames": self.unexpected_frames}

    def describe(self) -> dict:
        w, h = self.info.get("resolution", (None, None))
        return {"backend": f"Aravis ({self.info.get('model', '?')})", "width": w, "height": h,
                "fps": self.nominal_fps, "pixel_format": self._format}

    # ---- trigger / read --------------------------------------------------------------------------

    def trigger(self, part_id: str | None = None) -> None:
        """Queue a part. Software mode fires TriggerSoftware now, or as soon as the previous trigger's
        frame has arrived: cameras ignore a trigger while still exposing or reading out the last
        one, and a silently ignored trigger would shift every later part id onto the wrong frame."""
        if self.trigger_mode == "free":
            raise CameraError(f"{self.name} runs free; set trigger=software (or hardware) to trigger parts")
        if self._cam is None:
            raise CameraError(f"{self.name} is not open; trigger for part {part_id} not executed")
        try:
            self._pending.push(part_id)
        except OverflowError as exc:
            raise CameraError(f"{self.name}: {exc}; trigger for part {part_id} refused") from exc
        if self.trigger_mode == "software":
            self._fire_next(raise_errors=True)
        # hardware: the part id waits for the frame the trigger line starts (FIFO, best effort)

    def _fire_next(self, raise_errors: bool) -> None:
        """Execute TriggerSoftware for the oldest waiting part if no trigger is outstanding."""
        from gi.repository import GLib

        with self._trigger_lock:
            if self._outstanding is not None or self._cam is None:
                return
            item = self._pending.pop()
            if item is None:
                return
            fired_wall = time.time()
            try:
                self._cam.software_trigger()
            except GLib.Error as exc:
                self.lost_triggers += 1
                msg = f"{self.name}: software trigger for part {item[0]} failed: {exc.message}"
                if raise_errors:
                    raise CameraError(msg) from exc
                log.warning("%s", msg)
                return
            self._outstanding = (item[0], time.monotonic(), fired_wall)

    def _expire_outstanding(self) -> None:
        """A trigger whose frame never came (camera ignored it): report the part, go on with the next."""
        out = self._outstanding
        if out is not None and time.monotonic() - out[1] > self.trigger_timeout_s:
            with self._trigger_lock:
                self._outstanding = None
            self.lost_triggers += 1
            log.warning("%s: no frame %.1f s after the trigger for part %s; that part has no image",
                        self.name, self.trigger_timeout_s, out[0])
            self._fire_next(raise_errors=False)

    def read(self, timeout: float = 1.0) -> Frame | None:
        stream = self._stream
        if stream is None:
            raise CameraError(f"{self.name} is not open")
        deadline = time.monotonic() + timeout
        while True:
            if self._lost.is_set():
                raise CameraError(f"{self.name}: control lost (camera unplugged, rebooted or network down)")
            if self.trigger_mode == "software":
                self._expire_outstanding()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Short pops in software mode so an expired trigger is noticed while waiting.
            wait = min(left, 0.1) if self.trigger_mode == "software" and self._outstanding else left
            buf = stream.timeout_pop_buffer(max(1, int(wait * 1e6)))
            if buf is None:
                continue
            if self.trigger_mode == "free":  # latest wins: older complete frames go back unread (gaps)
                while (newer := stream.try_pop_buffer()) is not None:
                    stream.push_buffer(buf)
                    buf = newer
            try:
                frame = self._to_frame(buf)
            finally:
                stream.push_buffer(buf)
            if frame is not None:
                return frame

    def _to_frame(self, buf) -> Frame | None:
        from gi.repository import Aravis

        if buf.get_status() != Aravis.BufferStatus.SUCCESS:
            self.incomplete_buffers += 1
            log.debug("%s: incomplete buffer (%s)", self.name, buf.get_status())
            return None
        now_wall, now_mono = time.time(), time.monotonic()
        t_wall = buf.get_system_timestamp() / 1e9 or now_wall
        t_capture = now_mono - max(0.0, now_wall - t_wall)
        fid = buf.get_frame_id()
        part_id = None
        if self.trigger_mode == "software":
            out = self._outstanding
            if out is None or t_wall < out[2]:  # not ours: before the current trigger, or untriggered
                self.unexpected_frames += 1
                log.debug("%s: frame %d arrived with no trigger outstanding; discarded", self.name, fid)
                self._last_fid = fid  # not a drop in triggered mode
                return None
            part_id = out[0]
        elif self.trigger_mode == "hardware":
            item = self._pending.pop()
            part_id = item[0] if item else None
        image = self._convert(buf.get_data(), buf.get_image_width(), buf.get_image_height())
        self._advance_seq(fid)
        frame = Frame(self.camera_id, self._seq, t_capture, t_wall, image, part_id=part_id,
                      meta={"frame_id": fid, "source_ts": buf.get_timestamp(), "source": "aravis"})
        if self.trigger_mode == "software":
            with self._trigger_lock:
                self._outstanding = None
            self._fire_next(raise_errors=False)
        return frame

    def _advance_seq(self, fid: int) -> None:
        """seq += frame-id distance; GigE Vision 1.x ids are 16-bit and wrap 65535 → 1 (0 is unused)."""
        last, self._last_fid = self._last_fid, fid
        if last is None:
            return
        if fid > last:
            self._seq += fid - last
        elif last - fid > 32768 and last < 65536:  # wrapped
            self._seq += (65535 - last) + fid
        else:  # the camera restarted its counter: count it as the next frame
            self._seq += 1

    def _convert(self, data: bytes, w: int, h: int) -> np.ndarray:
        import cv2

        fmt = self._format
        if fmt in _MONO_BITS:
            bits = _MONO_BITS[fmt]
            if bits == 8:
                return np.frombuffer(data, np.uint8, count=w * h).reshape(h, w).copy()
            img = np.frombuffer(data, "<u2", count=w * h).reshape(h, w).astype(np.uint16)
            return img << (16 - bits) if bits < 16 else img
        if fmt in ("RGB8", "BGR8"):
            img = np.frombuffer(data, np.uint8, count=w * h * 3).reshape(h, w, 3)
            return np.ascontiguousarray(img[:, :, ::-1]) if fmt == "RGB8" else img.copy()
        raw = np.frombuffer(data, np.uint8, count=w * h).reshape(h, w)
        return cv2.cvtColor(raw, getattr(cv2, _BAYER[fmt]))

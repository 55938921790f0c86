"""Camera URIs (jetson-inference's convention) → frame sources.

    csi://0                       Jetson MIPI CSI sensor 0 (nvarguscamerasrc, OpenCV with GStreamer)
    v4l2:///dev/video0, /dev/video0, v4l2://0, 0     USB / V4L2 camera
    rtsp://[user:pw@]host[:port]/path                IP camera (Jetson: hardware decoding)
    file://video.mp4, file:///abs/image.png          a recorded video or one image
    dir://path/to/images?loop=1                      the images of a folder, sorted by name
    synthetic://?fps=30&defect_rate=0.2&count=N&seed=0&size=256   the generated production line
    gige://192.168.10.20?exposure_us=800&gain_db=0&pixel_format=Mono8&trigger=software
                                                     GigE Vision camera through Aravis, by IP only

``file://x`` and ``dir://x`` are relative paths, ``file:///x`` absolute ones. Query values override
the matching CameraSettings fields. A bad scheme, location or query value is a ConfigError naming
the URI (with any password masked).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from .base import FrameSource
from .settings import CameraSettings

SCHEMES = ("csi", "v4l2", "rtsp", "file", "dir", "synthetic", "gige")


def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 0/1, true/false, yes/no or on/off")


def _num(kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    def conv(v: str):
        x = kind(v)
        if x != x or (lo is not None and (x < lo or (lo_open and x == lo))) or (hi is not None and x > hi):
            bounds = f"{'>' if lo_open else '>='} {lo}" if lo is not None else ""
            bounds += (" and " if bounds and hi is not None else "") + (f"<= {hi}" if hi is not None else "")
            raise ValueError(f"must be {bounds}")
        return x

    return conv


def _choice(*options: str) -> Callable[[str], str]:
    def conv(v: str) -> str:
        if v not in options:
            raise ValueError(f"choose one of {', '.join(options)}")
        return v

    return conv


def _text(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


_TRIGGER = _choice("free", "software", "hardware")
_SIZE = {"width": _num(int, 1), "height": _num(int, 1)}

# Query keys each scheme understands, with their converters. rtsp:// keeps unknown keys in the URL
# (they belong to the camera's own URL); every other scheme rejects them.
QUERY_KEYS: dict[str, dict[str, Callable[[str], object]]] = {
    "csi": {**_SIZE, "fps": _num(float, 0, lo_open=True), "flip": _num(int, 0, 7)},
    "v4l2": {**_SIZE, "fps": _num(float, 0, lo_open=True), "fourcc": _choice("MJPG", "YUYV", "H264", "GREY")},
    "rtsp": {
        "codec": _choice("h264", "h265"),
        "backend": _choice("auto", "ffmpeg", "gstreamer"),
        "latency_ms": _num(int, 0),
        "threads": _num(int, 0),
        "transport": _choice("tcp", "udp"),
        "trigger": _choice("free", "software"),
    },
    "file": {"loop": _bool, "fps": _num(float, 0), "trigger": _choice("free", "software")},
    "dir": {"loop": _bool, "fps": _num(float, 0), "trigger": _choice("free", "software")},
    "synthetic": {
        "fps": _num(float, 0),
        "defect_rate": _num(float, 0.0, 1.0),
        "count": _num(int, 1),
        "seed": _num(int, 0),
        "size": _num(int, 32, 4096),
        "skip": _bool,
        "trigger": _choice("free", "software"),
    },
    "gige": {
        **_SIZE,
        "exposure_us": _num(float, 0, lo_open=True),
        "gain_db": _num(float),
        "pixel_format": _text,
        "trigger": _TRIGGER,
        "line": _text,
        "fps": _num(float, 0, lo_open=True),
        "buffers": _num(int, 2, 64),
    },
}


@dataclass(frozen=True)
class ParsedURI:
    """A validated camera URI.

    scheme: one of SCHEMES. location: what the scheme opens: sensor id ("0"), device path or index,
    file or folder path, camera IP/host, or for rtsp the camera URL without our own query keys.
    query: our typed options (ints, floats, bools, strings). raw: the URI as given.
    """

    scheme: str
    location: str
    query: dict[str, object] = field(default_factory=dict)
    raw: str = ""

    @property
    def safe(self) -> str:
        """The URI with any password masked, for messages and logs."""
        return redact(self.raw)

    def __repr__(self) -> str:  # never print a camera password
        return f"ParsedURI(scheme={self.scheme!r}, location={redact(self.location)!r}, query={self.query!r})"


def redact(uri: str) -> str:
    """``rtsp://user:secret@host/x`` → ``rtsp://user:***@host/x``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def parse_uri(uri: str) -> ParsedURI:
    """Validate a camera URI (see the module docstring). Raises ConfigError naming the URI."""
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError("camera URI is empty; e.g. synthetic://, dir://images, rtsp://host/stream, gige://IP")
    uri = uri.strip()
    safe = redact(uri)
    if "://" not in uri:
        return _parse_bare(uri)
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"camera URI '{safe}': unknown scheme '{scheme}://'; use one of "
                          + ", ".join(f"{s}://" for s in SCHEMES))
    try:
        parts = urlsplit(uri)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigError(f"camera URI '{safe}': cannot be parsed ({exc})") from exc
    if parts.fragment:
        raise ConfigError(f"camera URI '{safe}': unexpected '#{parts.fragment}'")
    spec = QUERY_KEYS[scheme]
    query: dict[str, object] = {}
    passthrough: list[tuple[str, str]] = []
    for key, value in pairs:
        if key not in spec:
            if scheme == "rtsp":
                passthrough.append((key, value))
                continue
            raise ConfigError(f"camera URI '{safe}': unknown option '{key}' for {scheme}://; "
                              f"known: {', '.join(sorted(spec)) or 'none'}")
        if key in query:
            raise ConfigError(f"camera URI '{safe}': option '{key}' given twice")
        try:
            query[key] = spec[key](value)
        except ValueError as exc:
            raise ConfigError(f"camera URI '{safe}': bad value {key}={value!r} ({exc})") from exc
    if scheme == "rtsp":
        if not parts.hostname:
            raise ConfigError(f"camera URI '{safe}': rtsp:// needs a host, e.g. rtsp://192.168.1.20:554/stream")
        location = urlunsplit(parts._replace(query=urlencode(passthrough)))
        return ParsedURI(scheme, location, query, uri)
    location = unquote(parts.netloc + parts.path)
    return ParsedURI(scheme, _check_location(scheme, location, safe), query, uri)


def _parse_bare(uri: str) -> ParsedURI:
    """URIs without a scheme: a device index or /dev/videoN (USB), else a file or folder path."""
    if uri.isdigit() or uri.startswith("/dev/video"):
        return ParsedURI("v4l2", _check_location("v4l2", uri, uri), {}, uri)
    scheme = "dir" if Path(uri).is_dir() else "file"
    return ParsedURI(scheme, uri, {}, uri)


def _check_location(scheme: str, location: str, safe: str) -> str:
    if scheme == "synthetic":
        if location.strip("/"):
            raise ConfigError(f"camera URI '{safe}': synthetic:// takes only options, e.g. synthetic://?fps=30")
        return ""
    if scheme == "csi":
        if not location.strip("/").isdigit():
            raise ConfigError(f"camera URI '{safe}': csi:// needs a sensor number, e.g. csi://0")
        return location.strip("/")
    if scheme == "v4l2":
        if location.isdigit() or (location.startswith("/dev/") and len(location) > 5):
            return location
        raise ConfigError(f"camera URI '{safe}': v4l2:// needs a device, e.g. v4l2:///dev/video0 or v4l2://0")
    if scheme == "gige":
        host = location.strip("/")
        if not host:
            raise ConfigError(f"camera URI '{safe}': gige:// needs the camera's IP address, e.g. gige://192.168.10.20")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _looks_like_hostname(host):
                raise ConfigError(
                    f"camera URI '{safe}': gige:// opens cameras by IPv4 address or host name only "
                    f"('{host}' is neither); opening by device id would make Aravis broadcast a discovery. "
                    "Give the camera a fixed IP (or DHCP reservation) and use gige://<IP>"
                ) from None
        return host
    if not location:
        raise ConfigError(f"camera URI '{safe}': {scheme}:// needs a path, e.g. {scheme}://images or {scheme}:///abs/path")
    return location


def _looks_like_hostname(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return all(lbl and len(lbl) <= 63 and lbl.replace("-", "").isalnum() and not lbl.startswith("-")
               for lbl in labels) and not host.replace(".", "").isdigit()


def _pick(parsed: ParsedURI, key: str, setting):
    """URI query value if given, else the CameraSettings value."""
    return parsed.query.get(key, setting)


def make_source(parsed: ParsedURI, settings: CameraSettings) -> FrameSource:
    """The raw (non-reconnecting) source for a parsed URI; unopened. ConfigError when it cannot apply here."""
    trigger = str(_pick(parsed, "trigger", settings.trigger))
    cid = settings.camera_id
    s = parsed.scheme
    if s == "synthetic":
        from .synthetic import SyntheticSource

        q = parsed.query
        _no_hardware_trigger(parsed, trigger)
        return SyntheticSource(
            camera_id=cid, fps=float(q.get("fps", settings.fps if settings.fps is not None else 30.0)),
            defect_rate=float(q.get("defect_rate", 0.2)), count=q.get("count"), seed=int(q.get("seed", 0)),
            size=int(q.get("size", 256)), skip=bool(q.get("skip", False)), trigger=trigger, name=parsed.safe,
        )
    if s in ("file", "dir"):
        from .files import DirSource, FileSource

        _no_hardware_trigger(parsed, trigger)
        cls = DirSource if s == "dir" else FileSource
        return cls(parsed.location, camera_id=cid, loop=bool(parsed.query.get("loop", False)),
                   fps=float(parsed.query.get("fps", 0.0)), trigger=trigger, name=parsed.safe)
    if s in ("csi", "v4l2", "rtsp"):
        from .opencv_source import OpenCVSource

        _no_hardware_trigger(parsed, trigger)
        return OpenCVSource.from_uri(parsed, settings, trigger)
    if s == "gige":
        from .gige import GigESource

        q = parsed.query
        return GigESource(
            parsed.location, camera_id=cid, trigger=trigger,
            exposure_us=_pick(parsed, "exposure_us", settings.exposure_us),
            gain_db=_pick(parsed, "gain_db", settings.gain_db),
            pixel_format=_pick(parsed, "pixel_format", settings.pixel_format),
            width=_pick(parsed, "width", settings.width), height=_pick(parsed, "height", settings.height),
            fps=_pick(parsed, "fps", settings.fps), line=str(q.get("line", "Line0")),
            buffers=int(q.get("buffers", 8)), open_timeout_s=settings.open_timeout_s, name=parsed.safe,
        )
    raise ConfigError(f"camera URI '{parsed.safe}': scheme {s}:// is not supported")  # pragma: no cover


def _no_hardware_trigger(parsed: ParsedURI, trigger: str) -> None:
    if trigger == "hardware":
        raise ConfigError(f"camera URI '{parsed.safe}': {parsed.scheme}:// has no hardware trigger input; "
                          "use trigger=free or software (hardware triggers need a gige:// camera)")


def open_source(settings: CameraSettings) -> FrameSource:
    """The source named by ``settings.uri``, unopened, wrapped for reconnection and frame checks.

    The pipeline calls open/read/close; the wrapper (ReconnectingSource) keeps one sequence across
    reopenings, drops and counts stale or black frames of live cameras, and reports ``status()``.
    Raises ConfigError (bad URI/settings) or DependencyError (a library the URI needs is missing).
    """
    from .reconnect import ReconnectingSource

    parsed = parse_uri(settings.uri)
    return ReconnectingSource(make_source(parsed, settings), settings)

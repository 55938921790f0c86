"""file:// (a video or one image) and dir:// (a folder of images, sorted by name) sources.

Images are read with their depth and channels kept (cv2.IMREAD_UNCHANGED), then normalised to what
Frame promises: (H, W) uint8/uint16 mono or (H, W, 3) uint8 BGR (16-bit colour keeps its top 8 bits,
alpha is dropped).

Bad image files (truncated, not an image, unsupported depth): the file is logged with its name,
counted in ``bad_files`` (names in ``bad_names``) and skipped; its sequence number is used up, so the
pipeline counts it as a dropped frame (a gap) rather than inspecting a half-decoded image. A bad last file
too: ``EndOfStream`` carries the next sequence number, so every file ends as a verdict or a counted gap.

These sources are ``recorded``: their frames wait for the reader, so the pipeline's "auto" mode reads them
losslessly (``?fps=N`` still paces them like a camera).

A dir:// folder that vanishes (unmounted, renamed) or is emptied while running is a lost camera, not a
run of bad files: ``read`` raises CameraError and ``open`` fails until the folder has images again
(``open`` lists the folder afresh), so the reconnect/backoff machinery takes over.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import CameraError, ConfigError, ImageError
from .base import EndOfStream, Frame, FrameSource
from .trigger import PendingTriggers

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm", ".webp")
_PNG_END = b"IEND\xaeB`\x82"


def normalize_image(image: np.ndarray, what: str) -> np.ndarray:
    """Decoded image → (H, W) uint8/uint16 or (H, W, 3) uint8 BGR. ImageError when unsupported."""
    import cv2

    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{what}: unsupported pixel type {image.dtype}; expected 8- or 16-bit")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        elif image.shape[2] != 3:
            raise ImageError(f"{what}: unsupported channel count {image.shape[2]}")
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
    elif image.ndim != 2:
        raise ImageError(f"{what}: unsupported image shape {image.shape}")
    return np.ascontiguousarray(image)


def read_image_file(path: Path) -> np.ndarray:
    """Read and check one image file. ImageError (with the file name) when truncated or unreadable.

    Decoders accept some truncated files and fill the missing part with grey; PNG and JPEG are
    therefore checked for their end marker first.
    """
    import cv2

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    suffix = path.suffix.lower()
    if suffix == ".png" and not data.rstrip(b"\x00").endswith(_PNG_END):
        raise ImageError(f"{path}: truncated PNG (no IEND chunk)")
    if suffix in (".jpg", ".jpeg") and not data.rstrip(b"\x00")[-2:] == b"\xff\xd9":
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    from ..data.mvtec import check_image_size

    check_image_size(data, str(path))  # a small file can declare gigapixels: refused before decoding
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ImageError(f"{path}: not a readable image")
    return normalize_image(image, str(path))


class _Pacer:
    """Delivers at most ``fps`` frames per second (0: no pacing) without catch-up bursts."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self._last: float | None = None

    def wait(self, timeout: float) -> bool:
        """Sleep until the next frame is due; False when that is more than ``timeout`` away."""
        if not self.period:
            return True
        now = time.monotonic()
        due = now if self._last is None else self._last + self.period
        if due - now > timeout:
            time.sleep(max(0.0, timeout))
            return False
        if due > now:
            time.sleep(due - now)
        self._last = max(due, now)
        return True


class _FiniteSource(FrameSource):
    """Shared part of file and folder sources: pacing, software trigger, frame building."""

    live = False
    recorded = True  # frames wait on disk for the reader: reading slowly loses nothing

    def __init__(self, camera_id: str, loop: bool, fps: float, trigger: str, name: str):
        if trigger not in ("free", "software"):
            raise ConfigError(f"camera URI '{name}': trigger={trigger} is not possible here; use free or software")
        self.camera_id = camera_id
        self.loop = loop
        self.fps = fps
        self.trigger_mode = trigger
        self.name = name
        self.nominal_fps = fps or None
        self._pacer = _Pacer(fps)
        self._pending = PendingTriggers()
        self._seq = 0
        self._open = False

    def trigger(self, part_id: str | None = None) -> None:
        if self.trigger_mode != "software":
            raise CameraError(f"{self.name} runs free; set camera trigger=software to trigger frames")
        self._pending.push(part_id)

    def _gate(self, timeout: float) -> tuple[bool, str | None]:
        """Wait for the next frame's turn (trigger or pace). (ready, part_id)."""
        if not self._open:
            raise CameraError(f"{self.name} is not open")
        if self.trigger_mode == "software":
            if not self._pending.wait(timeout):
                return False, None
            return True, self._pending.peek()[0]
        return self._pacer.wait(timeout), None

    def _frame(self, image: np.ndarray, part_id: str | None, meta: dict) -> Frame:
        if self.trigger_mode == "software":
            self._pending.pop()
        frame = Frame(camera_id=self.camera_id, seq=self._seq, t_capture=time.monotonic(), t_wall=time.time(),
                      image=image, part_id=part_id, meta=meta)
        self._seq += 1
        return frame


class DirSource(_FiniteSource):
    """The images of a folder in name order; ``loop`` starts over at the end (sequence continues)."""

    def __init__(self, path: str, camera_id: str = "cam0", loop: bool = False, fps: float = 0.0,
                 trigger: str = "free", name: str | None = None):
        super().__init__(camera_id, loop, fps, trigger, name or f"dir://{path}")
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise ConfigError(f"camera URI '{self.name}': folder not found: {self.path}")
        self.files = self._list()
        if not self.files:
            raise ConfigError(f"camera URI '{self.name}': no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.path}")
        self.bad_files = 0
        self.bad_names: list[str] = []
        self._index = 0

    def _list(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    def _folder_problem(self) -> str | None:
        """Why the folder cannot serve as a camera now (gone, unreadable, no images), or None."""
        if not self.path.is_dir():
            return f"folder not found: {self.path}"
        try:
            if not self._list():
                return f"no images in {self.path}"
        except OSError as exc:  # e.g. removed while being listed, or permission denied
            return f"cannot list {self.path} ({exc.strerror or exc})"
        return None

    def open(self) -> None:
        """List the folder afresh (it may have changed while closed); CameraError when gone or empty."""
        problem = self._folder_problem()
        if problem is not None:
            raise CameraError(f"{self.name}: {problem}")
        self.files = self._list()
        self._open = True

    def close(self) -> None:
        self._open = False

    def describe(self) -> dict:
        return {"backend": "files", "images": len(self.files), "fps": self.fps}

    def counters(self) -> dict[str, int]:
        return {"bad_frames": self.bad_files}

    def probe(self) -> bool | None:
        """Whether the folder is back with images (cheap: one listing)."""
        return self._folder_problem() is None

    def read(self, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._index >= len(self.files):
                if not self.loop:
                    raise EndOfStream(f"{self.name}: {len(self.files)} images done", next_seq=self._seq)
                self._index = 0
            ready, part_id = self._gate(max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            path = self.files[self._index]
            self._index += 1
            try:
                image = read_image_file(path)
            except ImageError as exc:
                problem = self._folder_problem()
                if problem is not None:  # the folder is gone, not this file: the camera is lost
                    self._index -= 1  # resume with this image once the folder is back
                    raise CameraError(f"{self.name}: {problem} (reading {path.name}: {exc})") from exc
                self.bad_files += 1
                if path.name not in self.bad_names:
                    self.bad_names.append(path.name)
                log.warning("%s: skipped bad image %s (seq %d): %s", self.name, path.name, self._seq, exc)
                self._seq += 1  # a counted gap: this frame was lost, not inspected
                if time.monotonic() >= deadline:
                    return None
                continue
            return self._frame(image, part_id, {"path": str(path), "source": "dir"})


class FileSource(_FiniteSource):
    """A video file (through OpenCV) or a single image file; ``loop`` replays it."""

    VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264", ".mjpeg")

    def __init__(self, path: str, camera_id: str = "cam0", loop: bool = False, fps: float = 0.0,
                 trigger: str = "free", name: str | None = None):
        super().__init__(camera_id, loop, fps, trigger, name or f"file://{path}")
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise ConfigError(f"camera URI '{self.name}': {self.path} is a folder, not a file; "
                              f"to read its images use dir://{path}")
        if not self.path.is_file():
            raise ConfigError(f"camera URI '{self.name}': file not found: {self.path}")
        self.is_image = self.path.suffix.lower() in IMAGE_EXTENSIONS
        self._cap = None
        self._image: np.ndarray | None = None
        self._done = False

    def open(self) -> None:
        import cv2

        self._done = False
        if self.is_image:
            try:
                self._image = read_image_file(self.path)
            except ImageError as exc:
                raise CameraError(f"{self.name}: {exc}") from exc
        else:
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise CameraError(f"{self.name}: OpenCV cannot open this video (codec or container unsupported?)")
            self._cap = cap
            if not self.fps:
                self.nominal_fps = cap.get(cv2.CAP_PROP_FPS) or None
        self._open = True

    def close(self) -> None:
        self._open = False
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> dict:
        return {"backend": "image file" if self.is_image else "OpenCV video file", "fps": self.nominal_fps}

    def probe(self) -> bool | None:
        return self.path.is_file()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._done:
            raise EndOfStream(f"{self.name}: done", next_seq=self._seq)
        ready, part_id = self._gate(timeout)
        if not ready:
            return None
        if self.is_image:
            self._done = not self.loop
            return self._frame(self._image, part_id, {"path": str(self.path), "source": "file"})
        ok, image = self._cap.read()
        if not ok and self.loop:
            import cv2

            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok:
            self._done = True
            raise EndOfStream(f"{self.name}: end of video", next_seq=self._seq)
        return self._frame(normalize_image(image, self.name), part_id, {"path": str(self.path), "source": "file"})

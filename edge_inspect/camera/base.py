"""The frame type and the source interface every camera implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One captured image.

    image: (H, W, 3) uint8 BGR (OpenCV order) or (H, W) uint8/uint16 mono, as the camera delivers.
    seq: per-camera sequence number, contiguous while nothing is dropped; a gap is a counted drop.
    t_capture: time.monotonic() seconds at capture; t_wall: time.time() seconds (UTC epoch).
    part_id: set in triggered mode from the PLC's trigger request.
    """

    camera_id: str
    seq: int
    t_capture: float
    t_wall: float
    image: np.ndarray
    part_id: str | None = None
    meta: dict = field(default_factory=dict)


class FrameSource(abc.ABC):
    """A camera or file source. Context-managed; ``read`` blocks for at most ``timeout`` seconds.

    ``read`` returns the next Frame, or None on timeout (no new frame yet). It raises CameraError
    when the camera is gone; the caller then reconnects via ``close``/``open``. End of a finite
    source (file, dir without loop) raises StopIteration-like ``EndOfStream``.
    """

    camera_id: str = "cam0"

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self, timeout: float = 1.0) -> Frame | None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def trigger(self, part_id: str | None = None) -> None:
        """Software trigger (triggered mode). Sources without trigger support raise CameraError."""
        from ..errors import CameraError

        raise CameraError(f"{type(self).__name__} does not support software triggers")

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EndOfStream(Exception):
    """A finite source (file://, dir:// without loop, synthetic://?count=N) has no more frames."""

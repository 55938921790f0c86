"""The frame type and the interfaces every camera source implements.

Two declared interfaces, so that nothing has to look for a feature with ``getattr``:
  ``CameraSource``   what the pipeline's source wrapper calls: open / read / close / trigger.
  ``SourceFeatures`` what a source tells about itself: live or recorded, trigger mode, nominal frame rate,
                     a description, its own counters and a cheap reachability probe.
``FrameSource`` is the base class of every source here: it implements both, with the defaults of a
simple source (not live, not recorded, free-running, no counters, no probe), so a source only
overrides what it really knows.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class CameraSource(Protocol):
    """Open, read, close and trigger a camera. ``read`` blocks for at most ``timeout`` seconds and returns
    the next Frame or None (no new frame yet); it raises CameraError when the camera is gone and
    EndOfStream at the end of a finite source."""

    camera_id: str

    def open(self) -> None: ...

    def read(self, timeout: float = 1.0) -> Frame | None: ...

    def close(self) -> None: ...

    def trigger(self, part_id: str | None = None) -> None: ...


@runtime_checkable
class SourceFeatures(Protocol):
    """What a source says about itself (read by ``ReconnectingSource``, the pipeline and ``check``).

    live          frames go on without us (a camera): freshness checks, stall watch, outage gaps.
    recorded      frames wait in storage for the reader (file://, dir://): reading slowly loses nothing,
                  so the pipeline's "auto" mode judges every one of them (lossless).
    trigger_mode  "free", "software" or "hardware".
    nominal_fps   the frame rate the source runs at, when known (None otherwise).
    describe()    backend, size, frame rate ... for logs and ``check``.
    counters()    counters only this kind of source knows (bad files, lost triggers, ...), by name.
    probe()       a cheap check whether the camera is reachable (a TCP connect, a device node): True,
                  False, or None when the source cannot tell. Used while reconnecting, so a camera that
                  is back is opened at once instead of at the next back-off slot.
    """

    live: bool
    recorded: bool
    trigger_mode: str
    nominal_fps: float | None

    def describe(self) -> dict: ...

    def counters(self) -> dict[str, int]: ...

    def probe(self) -> bool | None: ...


class FrameSource(abc.ABC):
    """A camera or file source: ``CameraSource`` + ``SourceFeatures`` with simple defaults. Context-managed.

    ``read`` returns the next Frame, or None on timeout (no new frame yet). It raises CameraError
    when the camera is gone; the caller then reconnects via ``close``/``open``. End of a finite
    source (file, dir without loop) raises ``EndOfStream``.
    """

    camera_id: str = "cam0"
    live: bool = False
    recorded: bool = False
    trigger_mode: str = "free"
    nominal_fps: float | None = None

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

    def describe(self) -> dict:
        return {}

    def counters(self) -> dict[str, int]:
        return {}

    def probe(self) -> bool | None:
        return None

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EndOfStream(Exception):
    """A finite source (file://, dir:// without loop, synthetic://?count=N) has no more frames.

    ``next_seq``: the sequence number the next frame would have had, when the source numbers its frames
    itself; frames it skipped at the very end (a bad last file) are then still counted as gaps.
    """

    def __init__(self, message: str = "", next_seq: int | None = None):
        super().__init__(message)
        self.next_seq = next_seq

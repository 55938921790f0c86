"""synthetic:// — the generated production line, for demos and tests without a camera.

Frame ``seq`` k shows the part drawn from ``np.random.default_rng([seed, k])``: the same seed gives
the same images and defects whatever the reading speed. ``frame.meta["truth"]`` is the true class
("good" or one of edge_inspect.data.synth.DEFECT_TYPES), so demos can count hits and misses.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..errors import CameraError
from .base import EndOfStream, Frame, FrameSource
from .trigger import PendingTriggers

log = logging.getLogger(__name__)


def part_rng(seed: int, seq: int) -> np.random.Generator:
    """The generator that draws part ``seq`` of a synthetic line with ``seed``: its class first, then its image."""
    return np.random.default_rng([int(seed), int(seq)])


def draw_truth(rng: np.random.Generator, defect_rate: float) -> str | None:
    """The part's defect type, or None for a good part: the first draws of ``part_rng``."""
    from ..data.synth import DEFECT_TYPES

    return str(rng.choice(tuple(DEFECT_TYPES))) if rng.random() < defect_rate else None


def true_class(seed: int, seq: int, defect_rate: float) -> str:
    """What part ``seq`` of a synthetic line is ("good" or a defect type), without rendering it; lets a
    demo or benchmark check verdicts against the truth from the wire's sequence numbers alone."""
    return draw_truth(part_rng(seed, seq), defect_rate) or "good"


class SyntheticSource(FrameSource):
    """Rendered parts, paced at ``fps`` (0 = as fast as possible), forever or ``count`` frames.

    skip=False: never faster than fps, every seq delivered (a slow reader slows the line down).
    skip=True: the line runs on a clock like a real one; a reader late by more than one period gets
    the newest due part and the parts it missed are sequence gaps (counted drops).
    trigger="software": one part per ``trigger(part_id)``, carrying that part id.
    """

    live = False

    def __init__(self, camera_id: str = "cam0", fps: float = 30.0, defect_rate: float = 0.2,
                 count: int | None = None, seed: int = 0, size: int = 256, skip: bool = False,
                 trigger: str = "free", name: str = "synthetic://"):
        if trigger not in ("free", "software"):
            from ..errors import ConfigError

            raise ConfigError(f"camera URI '{name}': synthetic:// supports trigger=free or software, not {trigger}")
        self.camera_id = camera_id
        self.fps = float(fps)
        self.defect_rate = float(defect_rate)
        self.count = count
        self.seed = int(seed)
        self.size = int(size)
        self.skip = bool(skip)
        self.trigger_mode = trigger
        self.name = name
        self.nominal_fps = self.fps or None
        self._render = None
        self._pending = PendingTriggers()
        self._next_seq = 0
        self._t0 = 0.0
        self._last_due: float | None = None

    def open(self) -> None:
        from ..data.synth import render_part

        self._render = render_part
        self._t0 = time.monotonic()
        self._last_due = None

    def close(self) -> None:
        self._render = None

    def describe(self) -> dict:
        return {"backend": "synthetic", "width": self.size, "height": self.size, "fps": self.fps}

    def trigger(self, part_id: str | None = None) -> None:
        if self.trigger_mode != "software":
            raise CameraError(f"{self.name} runs free; set camera trigger=software to trigger parts")
        self._pending.push(part_id)

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._render is None:
            raise CameraError(f"{self.name} is not open")
        if self.count is not None and self._next_seq >= self.count:
            raise EndOfStream(f"{self.name}: {self.count} frames delivered", next_seq=self._next_seq)
        if self.trigger_mode == "software":
            if not self._pending.wait(timeout):
                return None
            part_id, _ = self._pending.pop()
            return self._make(self._next_seq, part_id)
        seq = self._wait_turn(timeout)
        return None if seq is None else self._make(seq, None)

    def _wait_turn(self, timeout: float) -> int | None:
        """Sleep until the next part is due; the seq to render, or None when ``timeout`` ran out first."""
        if self.fps <= 0:
            return self._next_seq
        period = 1.0 / self.fps
        now = time.monotonic()
        if self.skip:
            due = self._t0 + self._next_seq * period
            if now - due > period:  # late: jump to the newest part that is already due
                newest = int(math.floor((now - self._t0) / period))
                if self.count is not None:
                    newest = min(newest, self.count - 1)
                self._next_seq = max(self._next_seq, newest)
                due = self._t0 + self._next_seq * period
        else:
            due = now if self._last_due is None else self._last_due + period
        wait = due - now
        if wait > timeout:
            time.sleep(max(0.0, timeout))
            return None
        if wait > 0:
            time.sleep(wait)
        self._last_due = max(due, now)  # a late reader gets no catch-up burst
        return self._next_seq

    def _make(self, seq: int, part_id: str | None) -> Frame:
        t_capture, t_wall = time.monotonic(), time.time()
        rng = part_rng(self.seed, seq)
        defect = draw_truth(rng, self.defect_rate)
        rgb, mask = self._render(rng, self.size, defect)
        self._next_seq = seq + 1
        return Frame(
            camera_id=self.camera_id, seq=seq, t_capture=t_capture, t_wall=t_wall,
            image=np.ascontiguousarray(rgb[:, :, ::-1]), part_id=part_id,
            meta={"truth": defect or "good", "defect_px": int(np.count_nonzero(mask)), "source": "synthetic"},
        )

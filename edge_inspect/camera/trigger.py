"""Part ids waiting for their triggered frame: shared by the sources that take software triggers."""

from __future__ import annotations

import threading
import time
from collections import deque


class PendingTriggers:
    """FIFO of (part_id, monotonic trigger time), thread-safe: the control thread pushes, capture pops.

    One trigger yields one frame, so the oldest waiting part id belongs to the next frame delivered.
    """

    def __init__(self, max_pending: int = 64):
        self._items: deque[tuple[str | None, float]] = deque()
        self._cond = threading.Condition()
        self._max = max_pending

    def push(self, part_id: str | None) -> float:
        """Queue a trigger; returns its monotonic time. Raises OverflowError when too many are waiting."""
        with self._cond:
            if len(self._items) >= self._max:
                raise OverflowError(f"{len(self._items)} triggers already waiting for frames")
            t = time.monotonic()
            self._items.append((part_id, t))
            self._cond.notify_all()
            return t

    def pop(self) -> tuple[str | None, float] | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def unpop(self, item: tuple[str | None, float]) -> None:
        """Put a popped trigger back at the head (its frame could not be delivered)."""
        with self._cond:
            self._items.appendleft(item)
            self._cond.notify_all()

    def discard_newest(self) -> None:
        """Forget the trigger pushed last (its trigger command failed)."""
        with self._cond:
            if self._items:
                self._items.pop()

    def wait(self, timeout: float) -> bool:
        """Block until a trigger is waiting or ``timeout`` seconds pass; True when one is waiting."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._items), timeout=max(0.0, timeout))

    def peek(self) -> tuple[str | None, float] | None:
        with self._cond:
            return self._items[0] if self._items else None

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

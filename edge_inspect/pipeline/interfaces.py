"""What the pipeline needs from its collaborators, declared (structural typing: any object with these
methods will do, so tests hand in small fakes).

    VerdictSink  where verdicts go: protocol.publisher.VerdictPublisher (ZeroMQ PUB). It owns the socket,
                 its queue and the heartbeat clock; the pipeline hands it verdicts and a status provider.
    Notifier     the service manager: health.sdnotify.SystemdNotifier (READY=1, WATCHDOG=1, STATUS=).
    ResultObserver  who else sees each published part (live view, defect archive, local window):
                 pipeline.observers.ObserverWorker; ``Pipeline.observers`` lists them (empty: none).

The camera side is declared in camera.base (CameraSource, SourceFeatures); the pipeline reads it through
camera.reconnect.ReconnectingSource, which owns reconnecting and sequence gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..verdict import Verdict


@runtime_checkable
class VerdictSink(Protocol):
    def publish(self, verdict: Verdict) -> Any:
        """Accept one verdict for sending; may be called from any thread and must not wait on the network.
        Returns what was sent (an object with ``result_state``, the label as sent; None: as given), or
        raises when the verdict was refused (the pipeline counts a publish error)."""

    def attach_status(self, provider: Callable[[], dict] | None) -> None:
        """Heartbeats carry ``provider()`` from now on; the sink calls it on its own clock."""

    def beat_soon(self) -> None:
        """The status changed (camera lost, back, stopping): send a heartbeat now, not at the next tick."""

    def close(self) -> None:
        """Send what is queued and a final heartbeat (asking the provider once more), then close."""


@runtime_checkable
class Notifier(Protocol):
    def ready(self) -> None: ...

    def watchdog(self) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self) -> None: ...

    def watchdog_interval_s(self) -> float | None:
        """The service manager's watchdog interval in seconds, or None when there is none."""


class NullNotifier:
    """A Notifier that tells nobody (no service manager)."""

    def ready(self) -> None: ...

    def watchdog(self) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self) -> None: ...

    def watchdog_interval_s(self) -> float | None:
        return None


@runtime_checkable
class ResultObserver(Protocol):
    name: str

    def offer(self, result: Any) -> None:
        """Take one published part (pipeline.observers.PartResult) from the decide thread: O(1), never
        blocks, never raises on a full queue (drops are counted by the observer)."""

    def stats(self) -> dict:
        """The observer's counters (offered, handled, dropped, errors, ...), shown in status()."""

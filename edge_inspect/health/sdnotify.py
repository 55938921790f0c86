"""systemd notify protocol (sd_notify) over the ``NOTIFY_SOCKET`` unix datagram socket, standard library only.

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the service started, shows the last
``STATUS=`` line in ``systemctl status`` and, with ``WatchdogSec=``, kills and restarts the service when
``WATCHDOG=1`` does not arrive within the interval. Outside systemd (``NOTIFY_SOCKET`` unset) every method
is a cheap no-op, so the pipeline calls them unconditionally.

Protocol: one datagram of newline-separated ``KEY=VALUE`` lines to the path in ``NOTIFY_SOCKET``; a
leading ``@`` names a Linux abstract socket (the ``@`` stands for a NUL byte).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# A blocked send must never freeze the frame loop for long: systemd reads its notify socket promptly,
# so a full buffer for more than this means something is badly wrong and the ping is dropped.
_SEND_TIMEOUT_S = 1.0


class SystemdNotifier:
    """Send sd_notify messages to systemd; a no-op when not started by systemd with ``NOTIFY_SOCKET``.

    ``environ``: where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default
    ``os.environ``, read once at construction). Send failures never raise: they are logged once and the
    method returns False. Thread-safe; ``watchdog()`` may be called once per frame: it sends at most one
    datagram per quarter watchdog interval (or per 0.5 s when the interval is unknown).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = _watchdog_interval(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))
        # Pings closer together than this add nothing: systemd only needs one per interval.
        self._min_ping_gap_s = self._watchdog_s / 4 if self._watchdog_s else 0.5
        self._last_ping = float("-inf")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket (messages are actually sent)."""
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """The service's watchdog interval in seconds (``WatchdogSec=``), or None when no watchdog is set.

        None also when ``WATCHDOG_PID`` names another process (the watchdog is not ours). systemd's
        advice: ping at least every half interval.
        """
        return self._watchdog_s

    def ready(self) -> bool:
        """``READY=1``: model loaded, warmed up and the camera delivers frames."""
        return self.notify(READY=1)

    def watchdog(self) -> bool:
        """``WATCHDOG=1`` from the frame loop; rate-limited, so calling it per frame is cheap.

        Returns True when a ping was sent now or recently enough (within the rate limit).
        """
        if self._address is None:
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._last_ping < self._min_ping_gap_s:
                return True
            self._last_ping = now
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun (SIGTERM received)."""
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (needed by ``Type=notify-reload``); send ``ready()`` after."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram (keys upper-cased). True when sent."""
        if self._address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            # A newline would start a new assignment inside the datagram: keep each value on its line.
            text = str(value).replace("\r", " ").replace("\n", " ")
            lines.append(f"{key.upper()}={text}")
        payload = "\n".join(lines).encode("utf-8", errors="replace")
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._sock.settimeout(_SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %r failed (%s); further failures are not logged", self._shown(), exc)
            return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _shown(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address


def _socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET → address for ``sendto``: a filesystem path, or an abstract name starting with NUL."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Newer systemd may hand out vsock:… addresses (VMs); not ours to handle on a Jetson.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications disabled", value)
    return None


def _watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    if not usec:
        return None
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog interval unknown", usec)
        return None
    return value / 1e6 if value > 0 else None

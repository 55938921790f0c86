"""ZeroMQ endpoints as people type them: checked and completed in one place.

Used by the settings (``publisher.bind``, ``control.bind``) and by the clients for endpoints given on the
command line (``listen --connect`` / ``--control``), so every way in accepts the same forms:

    127.0.0.1:5555        -> tcp://127.0.0.1:5555   (host:port without a transport means TCP)
    *:5555, [::1]:5555    -> tcp://*:5555, tcp://[::1]:5555
    tcp://eth0:5555, tcp://127.0.0.1:*, ipc:///run/edge-inspect/verdicts, inproc://name   (as given)

Refused with one line saying what is wrong: an empty endpoint, a host without a port, an unknown
transport (http://...). What only ZeroMQ can judge (a port that is not a number, a host that does not
resolve) is left to bind/connect, whose errors name the endpoint too.
"""

from __future__ import annotations

from ..errors import ConfigError

TRANSPORTS = ("tcp", "ipc", "inproc", "pgm", "epgm", "ws", "wss", "udp", "tipc", "vmci")
EXAMPLE = "tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"


class EndpointError(ConfigError, ValueError):
    """A malformed endpoint. A ConfigError (exit 2 on the command line) and a ValueError, so a pydantic
    validator reports it as the setting's error."""


def normalise_endpoint(endpoint: object, what: str = "endpoint") -> str:
    """The endpoint with its transport (``tcp://`` added to a bare ``host:port``); EndpointError naming
    ``what`` if it cannot be one."""
    if not isinstance(endpoint, str):
        raise EndpointError(f"{what}: expected a string like {EXAMPLE}, got {type(endpoint).__name__}")
    text = endpoint.strip()
    if not text:
        raise EndpointError(f"{what}: empty; expected {EXAMPLE}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        if ":" not in text or "/" in text:
            raise EndpointError(f"{what} {endpoint!r}: no transport and no port; expected {EXAMPLE}")
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme not in TRANSPORTS:
        raise EndpointError(f"{what} {endpoint!r}: unknown transport {scheme!r}; expected {EXAMPLE} "
                            "(or ipc://PATH)")
    if not rest:
        raise EndpointError(f"{what} {endpoint!r}: nothing after {scheme}://; expected {EXAMPLE}")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port or port.endswith("]"):  # "[::1]" alone: an address, no port
            raise EndpointError(f"{what} {endpoint!r}: no port; expected {EXAMPLE} (* binds any free port)")
    return f"{scheme}://{rest}"


def endpoint_host(endpoint: str) -> tuple[str, str]:
    """(transport, host) of an endpoint (normalised first); the host is '' for ipc/inproc. For the
    ``tcp://source;destination`` form, the destination's host."""
    scheme, _, rest = normalise_endpoint(endpoint).partition("://")
    if scheme not in ("tcp", "ws", "wss", "udp", "pgm", "epgm"):
        return scheme, ""
    rest = rest.split(";")[-1].split("/", 1)[0]
    return scheme, rest.rsplit(":", 1)[0]

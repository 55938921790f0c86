"""CURVE encryption and client authentication for the publisher and control sockets (pyzmq ``zmq.auth``).

Server side: one key pair (a zmq certificate ``*.key_secret`` file holds both keys) and a set of allowed
client public keys. Keys come from the files named in the settings or, under systemd, from the
credentials directory ($CREDENTIALS_DIRECTORY):

    curve-server.key_secret      the server key pair  (LoadCredential=curve-server.key_secret:/etc/...)
    curve-client*                allowed client public keys, one per file
                                 (LoadCredential=curve-clients:/etc/edge-inspect/clients/ loads a directory
                                 as curve-clients_<file>)

A relative ``server_secret_key`` / ``allowed_clients_dir`` is looked up in $CREDENTIALS_DIRECTORY first.
Mode "auto" turns CURVE on when the socket binds to a non-loopback address and off on loopback/ipc/inproc.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from ..errors import ConfigError
from .endpoints import EndpointError, endpoint_host
from .settings import SecuritySettings

log = logging.getLogger(__name__)

SERVER_CREDENTIAL = "curve-server.key_secret"
CLIENT_CREDENTIAL_PREFIX = "curve-client"
_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_LOOPBACK_HOSTS = {"localhost", "lo", "::1", "[::1]", "ip6-localhost"}


@dataclass(frozen=True)
class ServerKeys:
    public: bytes  # z85, 40 characters
    secret: bytes
    allowed_clients: frozenset[bytes]  # z85 public keys
    source: str  # where they were loaded from, for the log


@dataclass(frozen=True)
class ClientKeys:
    server_public: bytes
    public: bytes
    secret: bytes


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost; False for *, 0.0.0.0, NICs.
    A bare ``host:port`` counts as tcp:// (see endpoints.py); an endpoint that is not one is not loopback."""
    try:
        scheme, host = endpoint_host(endpoint)
    except EndpointError:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def curve_enabled(security: SecuritySettings, bind: str, role: str) -> bool:
    """Resolve mode auto/on/off for a socket bound to ``bind`` and log the outcome and why."""
    if security.curve == "on":
        log.info("%s %s: CURVE on (security.curve = on)", role, bind)
        return True
    if security.curve == "off":
        level = logging.INFO if is_loopback_endpoint(bind) else logging.WARNING
        log.log(level, "%s %s: CURVE off (security.curve = off)%s", role, bind,
                "" if level == logging.INFO else ": traffic is unencrypted and unauthenticated on the network")
        return False
    on = not is_loopback_endpoint(bind)
    log.info("%s %s: CURVE %s (security.curve = auto, %s address)", role, bind,
             "on" if on else "off", "non-loopback" if on else "loopback")
    return on


def _credentials_dir() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def _resolve(path: Path | None) -> Path | None:
    if path is None or path.is_absolute():
        return path
    creds = _credentials_dir()
    if creds is not None and (creds / path).exists():
        return creds / path
    return path


def read_public_key(path: Path) -> bytes:
    """The z85 public key from a zmq certificate file (public ``.key`` or ``.key_secret``)."""
    return _read_cert(path)[0]


def _read_cert(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CURVE key file {path}: {exc}") from None
    if not _Z85_KEY.match(public) or (secret is not None and not _Z85_KEY.match(secret)):
        raise ConfigError(f"CURVE key file {path}: keys must be 40-character z85 strings")
    return public, secret


def read_secret_key(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` certificate file; ConfigError if it has no secret key."""
    public, secret = _read_cert(path)
    if secret is None:
        raise ConfigError(f"CURVE key file {path} has no secret key (use the .key_secret file, not the .key)")
    return public, secret


def load_server_keys(security: SecuritySettings) -> ServerKeys:
    """Load the server key pair and allowed client keys; ConfigError naming whatever is missing."""
    creds = _credentials_dir()
    secret_file = _resolve(security.server_secret_key)
    if secret_file is None and creds is not None and (creds / SERVER_CREDENTIAL).is_file():
        secret_file = creds / SERVER_CREDENTIAL
    if secret_file is None:
        raise ConfigError(
            "CURVE is on but no server key: set security.server_secret_key (a .key_secret file) or provide the "
            f"systemd credential '{SERVER_CREDENTIAL}' ($CREDENTIALS_DIRECTORY "
            f"{'is not set' if creds is None else f'= {creds}'}); "
            "create one with: edge-inspect keys --out DIR --name server"
        )
    if not secret_file.is_file():
        raise ConfigError(f"security.server_secret_key: file not found: {secret_file}")
    public, secret = read_secret_key(secret_file)

    allowed: set[bytes] = set()
    clients_dir = _resolve(security.allowed_clients_dir)
    if clients_dir is not None:
        if not clients_dir.is_dir():
            raise ConfigError(f"security.allowed_clients_dir: not a directory: {clients_dir}")
        allowed.update(read_public_key(p) for p in sorted(clients_dir.glob("*.key")))
        where = f"{clients_dir}/*.key"
    elif creds is not None:
        allowed.update(read_public_key(p) for p in sorted(creds.glob(f"{CLIENT_CREDENTIAL_PREFIX}*")) if p.is_file())
        where = f"{creds}/{CLIENT_CREDENTIAL_PREFIX}*"
    else:
        where = None
    if not allowed:
        raise ConfigError(
            "CURVE is on but no allowed client keys: "
            + (f"found none in {where}" if where else
               "set security.allowed_clients_dir (a directory of client .key files) or provide systemd "
               f"credentials named {CLIENT_CREDENTIAL_PREFIX}*")
        )
    return ServerKeys(public, secret, frozenset(allowed), source=f"{secret_file}, clients from {where}")


def load_client_keys(server_key_file: str | Path, client_key_file: str | Path) -> ClientKeys:
    """Keys for a subscriber/control client: the server's public key and the client's own key pair."""
    server_public = read_public_key(Path(server_key_file))
    public, secret = read_secret_key(Path(client_key_file))
    return ClientKeys(server_public=server_public, public=public, secret=secret)


class _AllowList:
    """zmq.auth credentials provider: accept exactly the configured client keys, log refusals."""

    def __init__(self, allowed: frozenset[bytes], role: str):
        self._allowed = {k.decode("ascii") for k in allowed}
        self._role = role

    def callback(self, domain: str, key: str | bytes) -> bool:
        key_text = key.decode("ascii") if isinstance(key, bytes) else key
        ok = key_text in self._allowed
        if not ok:
            log.warning("%s: refused CURVE client with unknown public key %s", self._role, key_text)
        return ok


class CurveServer:
    """ZAP authenticator for one zmq.Context plus the server keys to apply to its sockets.

    ``secure(socket)`` must be called before the socket binds. ``stop()`` ends the authenticator thread.
    """

    def __init__(self, context: zmq.Context, keys: ServerKeys, role: str):
        from zmq.auth.thread import ThreadAuthenticator

        self.keys = keys
        self._auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(keys.allowed_clients, role))
        log.info("%s: CURVE keys from %s (%d allowed client key(s))", role, keys.source, len(keys.allowed_clients))

    def secure(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.keys.secret
        socket.curve_publickey = self.keys.public
        socket.curve_server = True

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def server_for(context: zmq.Context, security: SecuritySettings, bind: str, role: str) -> CurveServer | None:
    """A started CurveServer when CURVE applies to ``bind`` (see curve_enabled), else None."""
    if not curve_enabled(security, bind, role):
        return None
    try:
        keys = load_server_keys(security)
    except ConfigError as exc:  # say why CURVE is on at all: a new user did not ask for it
        why = ("security.curve = on" if security.curve == "on" else
               f"security.curve = auto and {bind} is not a loopback address")
        raise ConfigError(f"{role} {bind}: {exc} (CURVE is on because {why})") from None
    return CurveServer(context, keys, role)


def secure_client(socket: zmq.Socket, keys: ClientKeys | None) -> None:
    """Make ``socket`` a CURVE client (before connect); no-op for None (plain TCP)."""
    if keys is None:
        return
    socket.curve_serverkey = keys.server_public
    socket.curve_publickey = keys.public
    socket.curve_secretkey = keys.secret


def generate_keypair(out_dir: str | Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public, to share) and ``<name>.key_secret`` (mode 0600) into ``out_dir``."""
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", name) or name.startswith("."):
        raise ConfigError(f"key name {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . -")
    out = Path(out_dir)
    public_path, secret_path = out / f"{name}.key", out / f"{name}.key_secret"
    if not overwrite:
        for p in (public_path, secret_path):
            if p.exists():
                raise ConfigError(f"{p} exists; refusing to overwrite a key (remove it or pass --force)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Create the secret file 0600 before zmq writes it, so it is never readable by others.
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.chmod(secret_path, 0o600)
        public_file, secret_file = zmq.auth.create_certificates(out, name)
    except OSError as exc:
        raise ConfigError(f"cannot write keys to {out}: {exc}") from None
    return Path(public_file), Path(secret_file)

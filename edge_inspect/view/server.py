"""The live view's web server (Tornado, in its own thread with its own event loop).

Routes (each needs the token when one is set: ``?token=...`` or the ``X-View-Token`` header):
  /              the page (edge_inspect/view/static/index.html: plain HTML + JS, no build step, no CDN)
  /events        server-sent events: the state as JSON (``LiveState``: the line, one tile per camera under
                 ``cameras``, the NG thumbnails under ``ng``), the newest one whenever the client is ready for
                 it (a slow client skips states, it never queues them)
  /api/state     the same state once, as JSON
  /frame.jpg     a camera's newest view frame (heat map and defect boxes drawn): ``?camera=ID`` (default: the
                 first camera); ``?v=`` only defeats caches
  /ng/<key>.jpg  one NG thumbnail (keys are in the state's ``ng`` list)

Loopback by default. Bound to any other address it refuses to start without a token (ConfigError).
Tokens are compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
import threading
from importlib import resources

from ..errors import ConfigError, DependencyError
from .live import LiveState
from .settings import ViewSettings, split_host_port

log = logging.getLogger(__name__)

_KEEPALIVE_S = 15.0  # an SSE comment this often, so proxies and browsers keep an idle stream open


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); "" and 0.0.0.0 (every address) are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token_rule(settings: ViewSettings) -> str | None:
    """The token to require (None: none); ConfigError for a non-loopback address without one."""
    host, _ = split_host_port(settings.bind)
    token = settings.token.get_secret_value() if settings.token is not None else None
    if token == "":
        token = None
    if token is None and not is_loopback(host):
        raise ConfigError(f"the live view on {settings.bind} (not loopback) needs a token: set [view] token "
                          "or EDGE_INSPECT_VIEW__TOKEN (open the page as http://HOST:PORT/?token=...)")
    return token


class ViewServer:
    """Serves ``live`` on ``settings.bind``. ``start`` binds (ConfigError when the address is taken) and
    runs the event loop in a thread; ``close`` stops it. ``port`` is the bound port (bind port 0: any)."""

    def __init__(self, settings: ViewSettings, live: LiveState):
        try:
            import tornado  # noqa: F401 - checked here so a missing extra is one clear line
        except ImportError as exc:
            raise DependencyError("the live view needs Tornado: pip install 'edge-inspect[view]'") from exc
        # A line per request is noise on a station; 403/404 are expected (wrong token, a thumbnail just replaced).
        logging.getLogger("tornado.access").setLevel(logging.ERROR)
        self.settings = settings
        self.live = live
        self.token = check_token_rule(settings)
        self.host, port = split_host_port(settings.bind)
        from tornado.netutil import bind_sockets

        try:
            self._sockets = bind_sockets(port, self.host, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise ConfigError(f"the live view cannot listen on {settings.bind}: {exc.strerror or exc}") from None
        self.port = self._sockets[0].getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._changed: asyncio.Event | None = None
        self._closing = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-inspect-view-http", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        log.info("live view on %s%s", self.url, " (token required)" if self.token else "")

    def _run(self) -> None:
        from tornado.httpserver import HTTPServer

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._changed = asyncio.Event()
        server = HTTPServer(self._app())
        server.add_sockets(self._sockets)
        self.live.listeners.append(self._wake)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.stop()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def _wake(self) -> None:
        """From the view thread: a new state exists; wake the event streams in the server's loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._pulse)

    def _pulse(self) -> None:
        # Every waiting stream sees the set; a new Event makes the next wait block again.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        self._closing = True
        if self._wake in self.live.listeners:
            self.live.listeners.remove(self._wake)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._pulse)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        else:  # never started: give the bound port back
            for sock in self._sockets:
                sock.close()

    # ---- the web application ----------------------------------------------------------------

    def _app(self):
        import tornado.iostream
        import tornado.web

        server = self

        class Base(tornado.web.RequestHandler):
            def prepare(self):
                if server.token is None:
                    return
                given = self.get_query_argument("token", None) or self.request.headers.get("X-View-Token", "")
                if not hmac.compare_digest(given.encode(), server.token.encode()):
                    raise tornado.web.HTTPError(403, reason="token required")

            def set_default_headers(self):
                self.set_header("Cache-Control", "no-store")
                self.set_header("X-Content-Type-Options", "nosniff")

        class Page(Base):
            def get(self):
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.write(resources.files("edge_inspect.view").joinpath("static/index.html").read_bytes())

        class State(Base):
            def get(self):
                self.set_header("Content-Type", "application/json")
                self.write(json.dumps(server.live.snapshot()[1]))

        class Frame(Base):
            def get(self):
                jpeg = server.live.frame(self.get_query_argument("camera", None))
                if jpeg is None:
                    raise tornado.web.HTTPError(404, reason="no frame yet")
                self.set_header("Content-Type", "image/jpeg")
                self.write(jpeg)

        class Thumb(Base):
            def get(self, key):
                jpeg = server.live.thumb(int(key))
                if jpeg is None:
                    raise tornado.web.HTTPError(404, reason="no such thumbnail")
                self.set_header("Content-Type", "image/jpeg")
                self.write(jpeg)

        class Events(Base):
            async def get(self):
                self.set_header("Content-Type", "text/event-stream")
                sent = -1
                while not server._closing:
                    version, state = server.live.snapshot()
                    if version != sent:
                        self.write(f"data: {json.dumps(state)}\n\n")
                        sent = version
                    else:
                        self.write(": keep-alive\n\n")
                    try:
                        await self.flush()  # waits while the client is slow: it gets the newest state next
                    except tornado.iostream.StreamClosedError:
                        return
                    changed = server._changed
                    if server.live.snapshot()[0] != sent:
                        continue
                    try:
                        await asyncio.wait_for(changed.wait(), _KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        pass

        return tornado.web.Application([
            (r"/", Page), (r"/index.html", Page), (r"/events", Events), (r"/api/state", State),
            (r"/frame.jpg", Frame), (r"/ng/(\d+)\.jpg", Thumb),
        ], compress_response=False)

"""OSCQuery over HTTP beside the OSC port: the namespace of ``osc_protocol.oscquery`` with live values.

A standard-library ``ThreadingHTTPServer`` on its own thread (one short-lived thread per connection,
each with a socket timeout), so a slow or stuck HTTP client never holds up the OSC server thread or
the engine: answering reads a snapshot (engine status, pool counts, settings: each a short lock or
none) and builds the JSON. The same host and allow-list rules as OSC apply (the OSC server's
:meth:`~osc_protocol.server.OscServer.allows`). ``GET /`` is the whole tree, ``GET /dd/generate`` one
node, ``GET /path?ATTRIBUTE`` one attribute (204 when the node has none), ``GET /?HOST_INFO`` the host.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from models.errors import DDError
from osc_protocol.oscquery import Live, NoSuchNode, attribute, find, host_info, namespace
from osc_protocol.server import OscServer
from osc_protocol.table import PARAMS

log = logging.getLogger("dd.oscquery")

NAME = "dd-companion"


class OscQueryServer:
    """Serves OSCQuery for ``osc`` on ``host:port`` (0 = any free port); ``live`` gives the snapshot."""

    def __init__(self, osc: OscServer, port: int, live: Callable[[], Live], *, name: str = NAME) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"oscquery_port must be in range 0..65535, got {port}")
        self.osc = osc
        self.port = port
        self.live = live
        self.name = name
        self._httpd: _Httpd | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a thread; ``OSError`` naming the port if it is taken."""
        httpd_class = _Httpd6 if ":" in self.osc.host else _Httpd
        try:
            httpd = httpd_class((self.osc.host, self.port), _Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen for OSCQuery on {self.osc.host}:{self.port} (TCP): "
                          f"{exc.strerror}") from exc
        httpd.oscquery = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dd-oscquery", daemon=True)
        self._thread.start()
        log.info("OSCQuery on http://%s:%d/", *self.address)

    def stop(self) -> None:
        """Stop serving and close the socket (requests in progress finish on their own threads)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(2.0)

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the OSCQuery server is not started")
        return self._httpd.server_address[:2]  # type: ignore[return-value]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def answer(self, target: str, local_ip: str) -> tuple[int, Any]:
        """(status, JSON-ready body or an error text) for a GET of ``target`` ("/dd/generate?TYPE")."""
        parts = urlsplit(target)
        path, query = unquote(parts.path) or "/", parts.query
        if query == "HOST_INFO":
            osc_host, osc_port = self.osc.address
            ip = local_ip if osc_host in ("0.0.0.0", "::") else osc_host
            return HTTPStatus.OK, host_info(self.name, ip, osc_port)
        try:
            node = find(namespace(self.live()), path)
        except NoSuchNode:
            return HTTPStatus.NOT_FOUND, f"no OSC node at {path!r}; GET / lists them all"
        if not query:
            return HTTPStatus.OK, node
        try:
            found = attribute(node, query)
        except ValueError as exc:
            return HTTPStatus.BAD_REQUEST, str(exc)
        return (HTTPStatus.OK, found) if found is not None else (HTTPStatus.NO_CONTENT, None)


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    oscquery: OscQueryServer


class _Httpd6(_Httpd):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Httpd
    timeout = 5.0  # a client that connects and says nothing loses its thread after this
    protocol_version = "HTTP/1.1"
    server_version = "dd-companion-oscquery"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        oscquery = self.server.oscquery
        if not oscquery.osc.allows(self.client_address[0], "OSCQuery request"):
            self._send(HTTPStatus.FORBIDDEN, "not in the allow-list")
            return
        try:
            status, body = oscquery.answer(self.path, self.connection.getsockname()[0])
        except Exception:  # a bug of ours must not take the thread down silently
            log.exception("OSCQuery request %r failed", self.path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the log has the details"
        self._send(status, body)

    def _send(self, status: int, body: Any) -> None:
        if status == HTTPStatus.NO_CONTENT:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if isinstance(body, str):
            data, kind = (body + "\n").encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(body).encode("utf-8"), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        log.debug("%s %s", self.client_address[0], format % args)


def live_snapshot(engine: Any, pool: Any) -> Live:
    """The values a controller may show, read from a running engine and pool (each read is cheap)."""
    status = engine.status()
    model = engine.model
    categories = tuple(model.categories) if model else ()
    counts = pool.counts() if pool is not None else {}
    settings = {}
    for name in PARAMS:
        try:
            settings[name] = engine.get_param(name)
        except (DDError, ValueError):  # a value the engine cannot state now: left out rather than guessed
            continue
    pool_size = settings.get("pool_size")
    return Live(
        state={"engine": status.state, "model": status.model, "backend": status.runtime, "queued": status.queued},
        categories=categories,
        pool={c: int(counts.get(c, 0)) for c in categories},
        pool_size=int(pool_size) if isinstance(pool_size, int) else None,
        settings=settings,
    )

"""The public web listeners: ``web`` (plain HTTP) and ``webs`` (HTTPS, implicit TLS with the
mail listeners' certificate holder, so a reload reaches new connections). gevent's pywsgi
serves ``geomail.web.site.PublicSite``."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

import gevent
from gevent.baseserver import BaseServer
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from geomail.config.objects import ListenerConfig, WebConfig
from geomail.log import event
from geomail.maillog import MailLog
from geomail.server.listener import BoundServer
from geomail.server.tls import TLSContextHolder, TLSHandshakeError, wrap_server
from geomail.web.site import PublicSite, StartResponse

log = logging.getLogger(__name__)


class WebServer(BoundServer):
    """One ``web``/``webs`` address. At most ``web.max_connections`` at once; each connection
    lives at most ``web.request_timeout`` (keep-alive included), and pywsgi bounds the
    request line (8 KiB) and headers (100 lines of 64 KiB)."""

    def __init__(self, config: ListenerConfig, site: PublicSite, web: WebConfig,
                 tls: TLSContextHolder | None, handshake_timeout: float,
                 maillog: MailLog | None = None) -> None:
        super().__init__(config, maillog)
        if config.kind == "webs" and tls is None:
            raise ValueError("a webs listener needs the TLS certificate holder")
        self._site = site
        self._web = web
        self._tls = tls if config.kind == "webs" else None
        self._handshake_timeout = handshake_timeout

    def _make_server(self, sock: socket.socket) -> BaseServer:
        return _WebWSGIServer(self, sock, self._app, spawn=Pool(self._web.max_connections),
                              log=None, error_log=_ErrorLog())

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.url_scheme"] = "https" if self._tls is not None else "http"
        return self._site.app(environ, start_response)

    def serve(self, server: WSGIServer, sock: socket.socket, address: tuple[str, int]) -> None:
        """One connection: TLS with the holder's current context (webs), then HTTP, all
        within the request timeout."""
        lifetime = self._web.request_timeout
        sock.settimeout(lifetime)
        with gevent.Timeout(lifetime, False):
            try:
                if self._tls is not None:
                    sock = wrap_server(sock, self._tls.context, self._handshake_timeout)
                WSGIServer.handle(server, sock, address)
            except TLSHandshakeError as exc:
                event(log, logging.INFO, "web-tls-failed", client=address[0],
                      reason=exc.reason)
            except OSError:
                pass
        sock.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)


class _WebWSGIServer(WSGIServer):  # type: ignore[misc]  # gevent ships no stubs
    def __init__(self, owner: WebServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self._owner.serve(self, sock, address)


class _ErrorLog:
    """What pywsgi reports (bad requests, mostly the client's words): an event."""

    def write(self, message: str) -> None:
        if message.strip():
            event(log, logging.INFO, "web-error", error=message.strip()[:500])

    def flush(self) -> None:
        pass

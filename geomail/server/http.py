"""Health and metrics over HTTP (gevent's pywsgi, no framework): ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from gevent.baseserver import BaseServer
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from geomail.config import ListenerConfig
from geomail.log import event
from geomail.maillog import MailLog
from geomail.server.listener import BoundServer

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 50
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class HealthServer(BoundServer):
    """Serves ``GET /healthz`` (200 when ``problems()`` is empty, else 503 listing them) and
    ``GET /metrics`` (``render()``, Prometheus text format)."""

    def __init__(self, config: ListenerConfig, problems: Callable[[], list[str]],
                 render: Callable[[], str], maillog: MailLog | None = None) -> None:
        super().__init__(config, maillog)
        self._problems = problems
        self._render = render

    def _make_server(self, sock: socket.socket) -> BaseServer:
        return WSGIServer(sock, self.app, spawn=Pool(MAX_CONNECTIONS), log=None,
                          error_log=_ErrorLog())

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application."""
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", "only GET\n",
                            [("Allow", "GET, HEAD")])
        if path == "/healthz":
            problems = self._problems()
            if problems:
                return _respond(start_response, "503 Service Unavailable",
                                "".join(f"{p}\n" for p in problems))
            return _respond(start_response, "200 OK", "ok\n")
        if path == "/metrics":
            return _respond(start_response, "200 OK", self._render(), content_type=PROMETHEUS_TYPE)
        return _respond(start_response, "404 Not Found", "not found: try /healthz or /metrics\n")


class _ErrorLog:
    """What gevent's pywsgi reports (bad requests, mostly the client's words): an event."""

    def write(self, message: str) -> None:
        if message.strip():
            event(log, logging.WARNING, "http-error", error=message.strip())

    def flush(self) -> None:
        pass


def _respond(start_response: StartResponse, status: str, body: str,
             headers: list[tuple[str, str]] | None = None,
             content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *(headers or [])])
    return [data]

"""The public web site as a WSGI application, pure of sockets: ACME http-01 challenges
(RFC 8555 8.3), our MTA-STS policy (RFC 8461 3.3), client autoconfiguration. Plain HTTP
serves only the challenges and redirects the rest to HTTPS."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, quote

from geomail.address import normalize_domain
from geomail.config.objects import Config
from geomail.web import autoconfig
from geomail.web.autoconfig import BadRequest
from geomail.web.challenges import ChallengeStore
from geomail.web.mta_sts import policy_text

StartResponse = Callable[..., Any]

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
MTA_STS_PATH = "/.well-known/mta-sts.txt"
THUNDERBIRD_PATH = "/mail/config-v1.1.xml"
THUNDERBIRD_WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"  # compared case-insensitively
APPLE_PATH = "/apple/mail.mobileconfig"
APPLE_TYPE = "application/x-apple-aspen-config"
XML_TYPE = "application/xml; charset=utf-8"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # base64url (RFC 8555 8.3)


class PublicSite:
    """Routes requests by Host and path; ``app`` is the WSGI callable (the scheme comes from
    ``wsgi.url_scheme``, set by the listener)."""

    def __init__(self, config: Config, challenges: ChallengeStore) -> None:
        self.config = config
        self.challenges = challenges
        self.max_body = config.web.max_body
        # Host name -> the domain it belongs to ("" for the server's own name).
        self.hosts: dict[str, str] = {config.hostname: ""}
        for domain in config.domains:
            for prefix in ("mta-sts.", "autoconfig.", "autodiscover.", ""):
                self.hosts.setdefault(prefix + domain, domain)

    def host_of(self, environ: dict[str, Any]) -> str | None:
        """The request's Host (without port, normalised) if it is one of ours, else None."""
        raw = str(environ.get("HTTP_HOST") or "")
        if raw.startswith("["):  # an IP literal is never one of our names
            return None
        name = raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw
        try:
            name = normalize_domain(name)
        except ValueError:
            return None
        return name if name in self.hosts else None

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application."""
        method = str(environ.get("REQUEST_METHOD", ""))
        path = str(environ.get("PATH_INFO", ""))
        host = self.host_of(environ)
        if host is None:
            return _respond(start_response, "421 Misdirected Request", "unknown host\n")
        if path.startswith(CHALLENGE_PREFIX):
            return self._challenge(method, path[len(CHALLENGE_PREFIX):], start_response)
        autodiscover = path.lower() == AUTODISCOVER_PATH
        allowed = ("POST",) if autodiscover else ("GET", "HEAD")
        if environ.get("wsgi.url_scheme") != "https":
            if method not in ("GET", "HEAD", "POST"):
                return _not_allowed(start_response, allowed)
            query = str(environ.get("QUERY_STRING") or "")
            location = f"https://{host}{quote(path)}" + (f"?{query}" if query else "")
            # 308 keeps a POST a POST (RFC 9110 15.4.9); 301 for GET, as browsers expect.
            status = "301 Moved Permanently" if method != "POST" else "308 Permanent Redirect"
            return _respond(start_response, status, f"see {location}\n",
                            [("Location", location)])
        if method not in allowed:
            return _not_allowed(start_response, allowed)
        domain = self.hosts[host]
        try:
            if path == MTA_STS_PATH and host == f"mta-sts.{domain}":
                return _respond(start_response, "200 OK", policy_text(self.config))
            if path == THUNDERBIRD_WELL_KNOWN or (
                    path == THUNDERBIRD_PATH and host == f"autoconfig.{domain}"):
                return self._thunderbird(environ, domain, start_response)
            if autodiscover:
                return self._autodiscover(environ, start_response)
            if path == APPLE_PATH:
                address, domain = autoconfig.our_address(self.config, _query(environ))
                body = autoconfig.apple_profile(self.config, address, domain)
                return _respond_bytes(start_response, "200 OK", body, APPLE_TYPE, [
                    ("Content-Disposition", 'attachment; filename="mail.mobileconfig"')])
        except BadRequest:
            return _respond(start_response, "404 Not Found", "not found\n")
        return _respond(start_response, "404 Not Found", "not found\n")

    def _challenge(self, method: str, token: str,
                   start_response: StartResponse) -> Iterable[bytes]:
        """RFC 8555 8.3: the key authorization as the body, on plain HTTP, never redirected."""
        if method not in ("GET", "HEAD"):
            return _not_allowed(start_response, ("GET", "HEAD"))
        answer = self.challenges.get(token) if _TOKEN_RE.fullmatch(token) else None
        if answer is None:
            return _respond(start_response, "404 Not Found", "no such challenge\n")
        return _respond_bytes(start_response, "200 OK", answer.encode("ascii"), "text/plain")

    def _thunderbird(self, environ: dict[str, Any], domain: str,
                     start_response: StartResponse) -> Iterable[bytes]:
        address = _query(environ)
        if address:
            domain = autoconfig.our_address(self.config, address)[1]
        elif not domain:
            domain = self.config.domains[0]
        return _respond_bytes(start_response, "200 OK",
                              autoconfig.thunderbird(self.config, domain), XML_TYPE)

    def _autodiscover(self, environ: dict[str, Any],
                      start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= self.max_body:
            return _respond(start_response, "413 Content Too Large",
                            f"a body of 1 to {self.max_body} bytes, with Content-Length\n")
        body = environ["wsgi.input"].read(length)
        address, _domain = autoconfig.our_address(
            self.config, autoconfig.parse_autodiscover_request(body))
        return _respond_bytes(start_response, "200 OK",
                              autoconfig.autodiscover(self.config, address), XML_TYPE)


def _query(environ: dict[str, Any]) -> str:
    """The ``emailaddress`` query parameter, or ""."""
    try:
        values = parse_qs(str(environ.get("QUERY_STRING") or ""), max_num_fields=10).get(
            "emailaddress", [])
    except ValueError:  # too many fields
        return ""
    return values[0] if len(values) == 1 else ""


def _not_allowed(start_response: StartResponse, allowed: tuple[str, ...]) -> list[bytes]:
    return _respond(start_response, "405 Method Not Allowed", "method not allowed\n",
                    [("Allow", ", ".join(allowed))])


def _respond(start_response: StartResponse, status: str, body: str,
             headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    return _respond_bytes(start_response, status, body.encode(), "text/plain; charset=utf-8",
                          headers)


def _respond_bytes(start_response: StartResponse, status: str, data: bytes, content_type: str,
                   headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *(headers or [])])
    return [data]

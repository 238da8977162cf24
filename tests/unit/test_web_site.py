"""The public web site's routing and documents, driven as WSGI (no sockets): ACME http-01
(RFC 8555 8.3), MTA-STS policy (RFC 8461 3.2, 3.3), autoconfiguration checked field by field
against the config (RFC 8314 5.1: implicit TLS first), and hostile requests."""

from __future__ import annotations

import io
import plistlib
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from geomail.config import parse_config
from geomail.config.objects import Config
from geomail.errors import ConfigError
from geomail.web.challenges import ChallengeStore
from geomail.web.mta_sts import policy_id, policy_text
from geomail.web.site import PublicSite

AD_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
AD_REQUEST = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.'
              b'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
              b"<EMailAddress>%s</EMailAddress><AcceptableResponseSchema>http://schemas."
              b"microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
              b"</AcceptableResponseSchema></Request></Autodiscover>")


def make_config(listen: dict[str, Any] | None = None, **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "hostname": "mx.example.com", "domains": ["example.com", "example.org"],
        "data_dir": "/tmp/x", "tls": {"cert": "/tmp/x/c", "key": "/tmp/x/k"},
        "listen": listen or {"smtp": "0.0.0.0:25", "submissions": "0.0.0.0:4650",
                             "submission": "[::]:5870", "pop3s": "0.0.0.0:9950",
                             "pop3": "0.0.0.0:1100", "web": "0.0.0.0:80",
                             "webs": "0.0.0.0:443"},
        **extra,
    }
    return parse_config(raw)


class Response:
    def __init__(self, site: PublicSite, method: str, host: str, path: str, query: str = "",
                 scheme: str = "https", body: bytes = b"",
                 length: str | None = None) -> None:
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "HTTP_HOST": host, "wsgi.url_scheme": scheme,
                   "CONTENT_LENGTH": str(len(body)) if length is None else length,
                   "wsgi.input": io.BytesIO(body)}
        self.status = 0
        self.headers: dict[str, str] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            self.status = int(status.split()[0])
            self.headers = dict(headers)

        self.body = b"".join(site.app(environ, start_response))


@pytest.fixture
def site() -> PublicSite:
    return PublicSite(make_config(), ChallengeStore())


def test_acme_challenge_on_plain_http_and_never_redirected(site: PublicSite) -> None:
    """RFC 8555 8.3: the key authorization, text/plain, on port 80 for any of our names;
    unknown and malformed tokens are 404; only GET/HEAD."""
    site.challenges.put("abc_-DEF", "abc_-DEF.thumb")
    for host in ("mx.example.com", "example.org", "mta-sts.example.com:80"):
        response = Response(site, "GET", host, "/.well-known/acme-challenge/abc_-DEF",
                            scheme="http")
        assert (response.status, response.body) == (200, b"abc_-DEF.thumb")
        assert response.headers["Content-Type"] == "text/plain"
    assert Response(site, "GET", "mx.example.com", "/.well-known/acme-challenge/nope",
                    scheme="http").status == 404
    assert Response(site, "GET", "mx.example.com", "/.well-known/acme-challenge/a/../b",
                    scheme="http").status == 404
    assert Response(site, "POST", "mx.example.com", "/.well-known/acme-challenge/abc_-DEF",
                    scheme="http").status == 405


def test_plain_http_redirects_everything_else(site: PublicSite) -> None:
    """RFC 8461 3.3 (policy only over HTTPS): 301 to the same host and path on https; POST
    (Autodiscover) gets 308 so it stays a POST; other methods 405."""
    response = Response(site, "GET", "mta-sts.example.com:80", "/.well-known/mta-sts.txt",
                        scheme="http")
    assert response.status == 301
    assert response.headers["Location"] == "https://mta-sts.example.com/.well-known/mta-sts.txt"
    response = Response(site, "GET", "autoconfig.example.org", "/mail/config-v1.1.xml",
                        query="emailaddress=a%40example.org", scheme="http")
    assert response.headers["Location"] == (
        "https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=a%40example.org")
    assert Response(site, "POST", "autodiscover.example.com", "/autodiscover/autodiscover.xml",
                    scheme="http").status == 308
    assert Response(site, "PUT", "mx.example.com", "/x", scheme="http").status == 405


def test_unknown_hosts_are_misdirected(site: PublicSite) -> None:
    """RFC 9110 15.5.20: a Host that is not one of our names gets 421, on both schemes."""
    for host in ("evil.example.net", "", "[::1]:443", "127.0.0.1", "mta-sts.example.net",
                 "x" * 300):
        for scheme in ("http", "https"):
            assert Response(site, "GET", host, "/.well-known/mta-sts.txt",
                            scheme=scheme).status == 421


def test_mta_sts_policy(site: PublicSite) -> None:
    """RFC 8461 3.2: version, mode, mx, max_age in CRLF lines, text/plain, only on
    mta-sts.<domain>; 404 elsewhere, 405 for POST."""
    for domain in ("example.com", "example.org"):
        response = Response(site, "GET", f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.body == (b"version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\n"
                                 b"max_age: 604800\r\n")
    assert Response(site, "GET", "mx.example.com", "/.well-known/mta-sts.txt").status == 404
    assert Response(site, "POST", "mta-sts.example.com",
                    "/.well-known/mta-sts.txt").status == 405
    assert Response(site, "GET", "mta-sts.example.com", "/").status == 404


def test_policy_id_changes_exactly_with_the_policy() -> None:
    """RFC 8461 3.1: id is 1-32 alphanumerics and must change when the policy changes."""
    one = make_config(mta_sts={"mode": "enforce", "max_age": "1d", "mx": ["mx.example.com",
                                                                          "*.example.net"]})
    assert policy_text(one) == ("version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\n"
                                "mx: *.example.net\r\nmax_age: 86400\r\n")
    same = make_config(mta_sts={"mode": "enforce", "max_age": 86400, "mx": ["mx.example.com",
                                                                            "*.example.net"]})
    assert policy_id(one) == policy_id(same)
    assert policy_id(one) != policy_id(make_config())
    assert policy_id(one).isalnum() and 1 <= len(policy_id(one)) <= 32


@pytest.mark.parametrize("bad", [{"mode": "strict"}, {"max_age": "2y"}, {"max_age": 0},
                                 {"mx": ["not a host"]}, {"tls_report_address": "nobody"},
                                 {"unknown": 1}])
def test_mta_sts_config_errors(bad: dict[str, Any]) -> None:
    """RFC 8461 3.2: mode is testing|enforce|none, max_age at most 31557600 seconds."""
    with pytest.raises(ConfigError, match="mta_sts"):
        make_config(mta_sts=bad)


def test_webs_needs_a_certificate() -> None:
    """RFC 8461 3.3: the policy host is HTTPS, so a webs listener needs tls."""
    with pytest.raises(ConfigError, match=r"listen\.webs"):
        parse_config({"hostname": "mx.example.com", "domains": ["example.com"],
                      "data_dir": "/tmp/x", "listen": {"smtp": "0.0.0.0:25",
                                                       "webs": "0.0.0.0:443"}})


def servers(root: ET.Element, tag: str) -> list[dict[str, str]]:
    out = []
    for server in root.iter(tag):
        fields = {child.tag: child.text or "" for child in server}
        fields["type"] = server.get("type", "")
        out.append(fields)
    return out


def test_thunderbird_autoconfig_matches_the_config(site: PublicSite) -> None:
    """RFC 8314 5.1: implicit TLS first, then STARTTLS; every port, socketType, hostname and
    username as configured (clientConfig v1.1)."""
    for host, path, query in (
            ("autoconfig.example.org", "/mail/config-v1.1.xml", "emailaddress=Bob%40example.org"),
            ("example.org", "/.well-known/autoconfig/mail/config-v1.1.xml", ""),
            ("mx.example.com", "/.well-known/autoconfig/mail/config-v1.1.xml",
             "emailaddress=bob@example.org")):
        response = Response(site, "GET", host, path, query=query)
        assert response.status == 200, (host, path)
        assert response.headers["Content-Type"].startswith("application/xml")
        root = ET.fromstring(response.body)
        assert root.tag == "clientConfig" and root.get("version") == "1.1"
        provider = root.find("emailProvider")
        assert provider is not None and provider.get("id") == "example.org"
        assert [d.text for d in provider.findall("domain")] == ["example.com", "example.org"]
        common = {"hostname": "mx.example.com", "username": "%EMAILADDRESS%",
                  "authentication": "password-cleartext"}
        assert servers(root, "incomingServer") == [
            {**common, "type": "pop3", "port": "9950", "socketType": "SSL"},
            {**common, "type": "pop3", "port": "1100", "socketType": "STARTTLS"}]
        assert servers(root, "outgoingServer") == [
            {**common, "type": "smtp", "port": "4650", "socketType": "SSL"},
            {**common, "type": "smtp", "port": "5870", "socketType": "STARTTLS"}]
    assert Response(site, "GET", "autoconfig.example.org", "/mail/config-v1.1.xml").status == 200
    assert Response(site, "GET", "mx.example.com", "/mail/config-v1.1.xml").status == 404
    for query in ("emailaddress=a%40evil.example.net", "emailaddress=%3Cx%3E%40example.com",
                  "emailaddress=" + "a" * 300 + "%40example.com"):
        assert Response(site, "GET", "autoconfig.example.com", "/mail/config-v1.1.xml",
                        query=query).status == 404, query


def test_only_existing_public_listeners_are_described() -> None:
    """RFC 6186 3.4 in spirit: a service not configured is not offered; a loopback listener
    is not described when public ones exist; a plaintext-auth listener is still STARTTLS."""
    config = make_config({"smtp": "0.0.0.0:25", "submission": [
        {"address": "0.0.0.0:587", "allow_plaintext_auth": True}],
        "submissions": "127.0.0.1:465", "pop3s": "0.0.0.0:995", "webs": "0.0.0.0:443"})
    site = PublicSite(config, ChallengeStore())
    root = ET.fromstring(Response(site, "GET", "autoconfig.example.com",
                                  "/mail/config-v1.1.xml").body)
    assert [(s["port"], s["socketType"]) for s in servers(root, "outgoingServer")] == [
        ("587", "STARTTLS")]
    assert [(s["port"], s["socketType"]) for s in servers(root, "incomingServer")] == [
        ("995", "SSL")]


def test_autodiscover_matches_the_config(site: PublicSite) -> None:
    """Autodiscover POX (outlook responseschema 2006a): POP3 and SMTP, the implicit-TLS
    listeners (RFC 8314 5.1), LoginName the address, on both path spellings."""
    for host, path in (("autodiscover.example.com", "/autodiscover/autodiscover.xml"),
                       ("mx.example.com", "/Autodiscover/Autodiscover.xml")):
        response = Response(site, "POST", host, path, body=AD_REQUEST % b"Al@Example.COM")
        assert response.status == 200, path
        root = ET.fromstring(response.body)
        account = root.find(f"{AD_NS}Response/{AD_NS}Account")
        assert account is not None
        protocols = [{child.tag.removeprefix(AD_NS): child.text for child in protocol}
                     for protocol in account.findall(f"{AD_NS}Protocol")]
        base = {"Server": "mx.example.com", "LoginName": "Al@example.com", "SSL": "on",
                "DomainRequired": "off", "SPA": "off", "AuthRequired": "on"}
        assert protocols == [{**base, "Type": "POP3", "Port": "9950", "Encryption": "SSL"},
                             {**base, "Type": "SMTP", "Port": "4650", "Encryption": "SSL"}]
    starttls = PublicSite(make_config({"smtp": "0.0.0.0:25", "submission": "0.0.0.0:587",
                                       "pop3": "0.0.0.0:110"}), ChallengeStore())
    root = ET.fromstring(Response(starttls, "POST", "autodiscover.example.com",
                                  "/autodiscover/autodiscover.xml",
                                  body=AD_REQUEST % b"a@example.com").body)
    assert [(p.findtext(f"{AD_NS}Port"), p.findtext(f"{AD_NS}Encryption"))
            for p in root.iter(f"{AD_NS}Protocol")] == [("110", "TLS"), ("587", "TLS")]


def test_autodiscover_refuses_hostile_requests(site: PublicSite) -> None:
    """XML entity expansion (billion laughs) and external entities are refused before
    parsing; bodies over web.max_body are 413; foreign and malformed addresses are 404."""
    path, host = "/autodiscover/autodiscover.xml", "autodiscover.example.com"
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
              b'"&lol;&lol;&lol;">]><Autodiscover><Request><EMailAddress>&lol2;@example.com'
              b"</EMailAddress></Request></Autodiscover>")
    external = (b'<!doctype x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>'
                b"<EMailAddress>&e;</EMailAddress></x>")
    for body in (laughs, external, b"<not xml", b"<x/>", AD_REQUEST % b"a@evil.example.net",
                 AD_REQUEST % b"<b>@example.com", AD_REQUEST % b"a b@example.com"):
        assert Response(site, "POST", host, path, body=body).status in (400, 404), body
    assert Response(site, "POST", host, path, body=b"x" * 20000).status == 413
    assert Response(site, "POST", host, path, body=b"", length="").status == 413
    assert Response(site, "POST", host, path, body=b"x", length="-5").status == 413
    assert Response(site, "GET", host, path).status == 405


def test_apple_profile_matches_the_config(site: PublicSite) -> None:
    """An Apple .mobileconfig: com.apple.mail.managed POP account with the implicit-TLS
    ports (RFC 8314 5.1), the address as username, stable uuid5 PayloadUUIDs."""
    response = Response(site, "GET", "mx.example.com", "/apple/mail.mobileconfig",
                        query="emailaddress=bob%40example.org")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(response.body)
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypePOP"
    assert mail["EmailAddress"] == "bob@example.org"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"], mail["IncomingMailServerUsername"]) == (
        "mx.example.com", 9950, True, "bob@example.org")
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"], mail["OutgoingMailServerUsername"]) == (
        "mx.example.com", 4650, True, "bob@example.org")
    assert mail["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    again = plistlib.loads(Response(site, "GET", "mx.example.com", "/apple/mail.mobileconfig",
                                    query="emailaddress=bob%40example.org").body)
    assert again["PayloadUUID"] == profile["PayloadUUID"]
    assert again["PayloadContent"][0]["PayloadUUID"] == mail["PayloadUUID"]
    for query in ("", "emailaddress=bob%40evil.example.net", "emailaddress=%3Cscript%3E",
                  "emailaddress=a@example.org&emailaddress=b@example.org",
                  "&".join(f"k{i}=v" for i in range(50))):
        assert Response(site, "GET", "mx.example.com", "/apple/mail.mobileconfig",
                        query=query).status == 404, query


def test_everything_else_is_404(site: PublicSite) -> None:
    """Only the documented routes exist (docs/web.md)."""
    for path in ("/", "/index.html", "/.well-known/", "/healthz", "/metrics", "/../etc/passwd"):
        assert Response(site, "GET", "mx.example.com", path).status == 404


def test_web_bounds_are_configurable_and_checked() -> None:
    """RFC 9112 leaves request bounds to the server: web.max_connections, request_timeout and
    max_body have defaults, parse durations and sizes, and refuse nonsense with the key path."""
    config = make_config(web={"max_connections": 5, "request_timeout": "3s", "max_body": "1KiB"})
    assert (config.web.max_connections, config.web.request_timeout, config.web.max_body) == (
        5, 3.0, 1024)
    for bad in ({"max_connections": 0}, {"request_timeout": "0s"}, {"max_body": -1},
                {"nonsense": 1}):
        with pytest.raises(ConfigError, match=r"web\."):
            make_config(web=bad)

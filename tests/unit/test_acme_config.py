"""tls.acme: config, lineage names, the renewal time and the backoff schedule (RFC 8555)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geomail.certs.manager import BACKOFF_MAX, backoff_delay, renew_at
from geomail.certs.store import CertInfo, lineage_names, read_info, self_signed
from geomail.config import ConfigError, parse_config
from geomail.config.objects import LETSENCRYPT, LETSENCRYPT_STAGING


def _raw(tmp_path: Path, tls: dict[str, Any], web: bool = True) -> dict[str, Any]:
    listen: dict[str, Any] = {"smtp": ["127.0.0.1:0"], "submissions": ["127.0.0.1:0"]}
    if web:
        listen["web"] = ["127.0.0.1:0"]
    return {"hostname": "mx.example.com", "domains": ["example.com"],
            "data_dir": str(tmp_path / "data"), "listen": listen, "tls": tls}


def test_acme_defaults_and_paths(tmp_path: Path) -> None:
    """RFC 8555 7.1.1: the directory URL defaults to Let's Encrypt production; the mail
    lineage's files live under data_dir/acme/mail/."""
    config = parse_config(_raw(tmp_path, {"acme": {"email": "admin@example.com"}}))
    assert config.tls is not None and config.tls.acme is not None
    assert config.tls.acme.directory == LETSENCRYPT
    assert config.tls.acme.renew_before == 30 * 86400
    assert config.tls.cert == str(tmp_path / "data" / "acme" / "mail" / "cert.pem")
    assert config.tls.key == str(tmp_path / "data" / "acme" / "mail" / "key.pem")


@pytest.mark.parametrize(("given", "expected"), [
    ("letsencrypt", LETSENCRYPT), ("letsencrypt-staging", LETSENCRYPT_STAGING),
    ("https://ca.example.net/dir", "https://ca.example.net/dir")])
def test_acme_directory_shortcuts(tmp_path: Path, given: str, expected: str) -> None:
    """RFC 8555 7.1.1: any directory by URL, two shortcuts by name."""
    config = parse_config(_raw(tmp_path, {"acme": {"email": "a@example.com",
                                                   "directory": given, "renew_before": "10d"}}))
    assert config.tls is not None and config.tls.acme is not None
    assert config.tls.acme.directory == expected
    assert config.tls.acme.renew_before == 10 * 86400


@pytest.mark.parametrize(("tls", "web", "message"), [
    ({"cert": "/c.pem", "key": "/k.pem", "acme": {"email": "a@example.com"}}, True,
     "tls: 'cert'/'key' and 'acme' exclude each other"),
    ({"acme": {"email": "a@example.com"}}, False, "tls.acme: needs a 'listen.web' listener"),
    ({"acme": {"directory": "letsencrypt"}}, True, "tls.acme.email: required"),
    ({"acme": {"email": "a@example.com", "directory": "http://ca/dir"}}, True,
     "tls.acme.directory: expected an https:// URL"),
    ({"acme": {"email": "a@example.com", "bogus": 1}}, True, "tls.acme.bogus"),
])
def test_acme_config_errors_name_the_key(tmp_path: Path, tls: dict[str, Any], web: bool,
                                         message: str) -> None:
    """RFC 8555 8.3: http-01 needs the web listener; errors name the key path."""
    with pytest.raises(ConfigError) as info:
        parse_config(_raw(tmp_path, tls, web))
    assert message in str(info.value)


def test_lineage_names() -> None:
    """RFC 8555 7.1.3: the identifiers ordered per lineage; web names only with webs."""
    assert lineage_names("mx.a.org", ("a.org", "b.org"), web=False) == {"mail": ["mx.a.org"]}
    names = lineage_names("mx.a.org", ("a.org", "b.org"), web=True)
    assert names["web"] == ["mta-sts.a.org", "autoconfig.a.org", "autodiscover.a.org",
                            "mta-sts.b.org", "autoconfig.b.org", "autodiscover.b.org"]


def test_backoff_schedule() -> None:
    """RFC 8555 6.6: exponential backoff from a minute to a day; Retry-After and rate
    limits respected."""
    middle = lambda low, high: 1.0  # noqa: E731 - no jitter
    assert [backoff_delay(n, rand=middle) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff_delay(30, rand=middle) == BACKOFF_MAX
    assert backoff_delay(1, retry_after=7200, rand=middle) == 7200
    assert backoff_delay(1, rate_limited=True, rand=middle) == 3600
    jittered = {backoff_delay(3) for _ in range(20)}
    assert all(192 <= d <= 288 for d in jittered) and len(jittered) > 1


def test_renew_at() -> None:
    """RFC 8555 7.4: renew_before ahead of expiry, at most a third of the lifetime ahead."""
    info = CertInfo(0.0, 90 * 86400.0, 1, "CN=CA", ("mx.a.org",), False)
    assert renew_at(info, 30 * 86400) == 60 * 86400
    assert renew_at(info, 10 * 86400) == 80 * 86400
    short = CertInfo(0.0, 9.0, 1, "CN=CA", ("mx.a.org",), False)
    assert renew_at(short, 30 * 86400) == 6.0


def test_placeholder_is_self_signed(tmp_path: Path) -> None:
    """RFC 5280 4.1.2.4: the placeholder's issuer is its subject (told apart from the CA's)."""
    cert, _key = self_signed(["mx.a.org"])
    path = tmp_path / "cert.pem"
    path.write_bytes(cert)
    info = read_info(str(path))
    assert info is not None and info.self_signed and info.names == ("mx.a.org",)

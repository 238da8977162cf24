"""ACME (RFC 8555) against pebble: issuance at first start, renewal, a failed renewal, restart.

Pebble validates http-01 on geomail's own web listener, resolving the names through dnsmasq.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from geomail.certs.check import acme_report
from geomail.config import parse_config
from tests.support import free_port, wait_for
from tests.support.dns import Dnsmasq
from tests.support.geomail import base_config, running_app
from tests.support.pebble import Pebble

HOSTNAME = "mx.acme.test"


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    server = Dnsmasq().host(HOSTNAME, "127.0.0.1")
    # The web lineage's names (mta-sts.test.com, autoconfig.example.com, ...).
    server.args += ["--address=/test.com/127.0.0.1", "--address=/example.com/127.0.0.1"]
    with server:
        yield server


@pytest.fixture
def web_port() -> int:
    return free_port()


def _pebble(web_port: int, dnsmasq: Dnsmasq, validity: int = 0) -> Pebble:
    return Pebble(web_port, dnsmasq.nameserver, validity).start()


@pytest.fixture
def pebble(web_port: int, dnsmasq: Dnsmasq) -> Iterator[Pebble]:
    server = _pebble(web_port, dnsmasq)
    yield server
    server.close()


@pytest.fixture
def short_pebble(web_port: int, dnsmasq: Dnsmasq) -> Iterator[Pebble]:
    """Certificates valid 9 s: renewed a third of their life before expiry, i.e. after ~6 s."""
    server = _pebble(web_port, dnsmasq, validity=9)
    yield server
    server.close()


def _config(tmp_path: Path, pebble: Pebble, web_port: int, webs: bool = False
            ) -> dict[str, Any]:
    listen = {"submissions": ["127.0.0.1:0"], "pop3s": ["127.0.0.1:0"],
              "web": [f"127.0.0.1:{web_port}"]}
    if webs:
        listen["webs"] = ["127.0.0.1:0"]
    return base_config(
        tmp_path, hostname=HOSTNAME, listen=listen,
        tls={"acme": {"email": "postmaster@example.com", "directory": pebble.directory,
                      "ca_file": pebble.ca_file}})


def _served(port: int, root: str | None = None, name: str = HOSTNAME) -> x509.Certificate:
    """The certificate presented on ``port`` for SNI ``name`` (verified against ``root``)."""
    if root is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=root)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def _issued_serial(app: Any, root: str) -> int | None:
    """The serial served on 465, once it is a pebble-issued certificate (else None)."""
    cert = _served(app.ports["submissions"][0])
    if cert.issuer == cert.subject:
        return None  # the self-signed placeholder
    return _served(app.ports["submissions"][0], root).serial_number


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(name + " ")]


def test_first_issuance_served_on_465_and_995(tmp_path: Path, pebble: Pebble, web_port: int,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 7.3 (account), 7.4 (order, finalize, download) and 8.3 (http-01 on the web
    listener): at first start the placeholder is replaced by the CA's certificate on 465 and
    995, verified against pebble's root, without a restart."""
    caplog.set_level(logging.INFO)
    root = pebble.root_pem()
    with running_app(_config(tmp_path, pebble, web_port)) as app:
        serial = wait_for(lambda: _issued_serial(app, root), timeout=20,
                          message="a pebble certificate on 465")
        pop3s = _served(app.ports["pop3s"][0], root)
        assert pop3s.serial_number == serial
        assert HOSTNAME in pop3s.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert app.metrics.value("geomail_acme_orders_total", lineage="mail",
                                 result="success") == 1
        assert "geomail_certificate_expiry_seconds" in app.metrics.render()
    assert _events(caplog, "acme-placeholder")
    assert _events(caplog, "acme-certificate-issued")
    key = tmp_path / "data" / "acme" / "mail" / "key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    account = json.loads((tmp_path / "data" / "acme" / "account.json").read_text())
    assert account["directory"] == pebble.directory


def test_restart_reuses_stored_certificate_and_account(
        tmp_path: Path, pebble: Pebble, web_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 7.4: a stored certificate far from expiry is served at once after a restart,
    with no new order and the same account (7.3.1)."""
    caplog.set_level(logging.INFO)
    root = pebble.root_pem()
    config = _config(tmp_path, pebble, web_port)
    with running_app(config) as app:
        serial = wait_for(lambda: _issued_serial(app, root), timeout=20, message="issuance")
    account = (tmp_path / "data" / "acme" / "account.json").read_bytes()
    caplog.clear()
    with running_app(config) as app:
        assert _served(app.ports["submissions"][0], root).serial_number == serial
        wait_for(lambda: app.certificates.lineages["mail"].served, timeout=10,
                 message="the manager's first check")
    assert not _events(caplog, "acme-order")
    assert not _events(caplog, "acme-placeholder")
    assert (tmp_path / "data" / "acme" / "account.json").read_bytes() == account


def test_renewal_near_expiry_served_without_restart(
        tmp_path: Path, short_pebble: Pebble, web_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 7.4: a certificate near expiry is renewed by a new order; the new one is
    served on 465 and 995 by the running server (open sessions keep their old context)."""
    caplog.set_level(logging.INFO)
    root = short_pebble.root_pem()
    with running_app(_config(tmp_path, short_pebble, web_port)) as app:
        first = wait_for(lambda: _issued_serial(app, root), timeout=20, message="issuance")
        second = wait_for(lambda: (s := _issued_serial(app, root)) != first and s, timeout=20,
                          message="a renewed certificate on 465")
        assert wait_for(lambda: _served(app.ports["pop3s"][0]).serial_number != first,
                        timeout=5, message="the renewed certificate on 995")
        assert second != first
    assert any("reason=due" in line for line in _events(caplog, "acme-order"))


def test_failed_renewal_keeps_old_certificate(
        tmp_path: Path, short_pebble: Pebble, web_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 7.4 / 6.6: when the CA cannot be reached at renewal time the old certificate
    stays in use, the failure is logged and the next attempt backs off."""
    caplog.set_level(logging.INFO)
    root = short_pebble.root_pem()
    with running_app(_config(tmp_path, short_pebble, web_port)) as app:
        serial = wait_for(lambda: _issued_serial(app, root), timeout=20, message="issuance")
        short_pebble.stop()  # the CA is down when renewal comes due
        failed = wait_for(lambda: _events(caplog, "acme-order-failed"), timeout=20,
                          message="a failed renewal")
        assert "keeping=old-certificate" in failed[0]
        assert "attempt=1" in failed[0]
        lineage = app.certificates.lineages["mail"]
        assert lineage.next_check - app.certificates.clock() > 40  # backoff: ~1 min
        for port in (app.ports["submissions"][0], app.ports["pop3s"][0]):
            assert _served(port).serial_number == serial
        assert app.metrics.value("geomail_acme_orders_total", lineage="mail",
                                 result="failure") == 1


def test_forgotten_account_is_registered_again(
        tmp_path: Path, short_pebble: Pebble, web_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 7.3 / 6.7 (accountDoesNotExist): when the CA no longer knows the stored
    account (pebble restarted with an empty state), the renewal registers a new account
    and succeeds at once instead of failing on every retry."""
    caplog.set_level(logging.INFO)
    root = short_pebble.root_pem()
    with running_app(_config(tmp_path, short_pebble, web_port)) as app:
        first = wait_for(lambda: _issued_serial(app, root), timeout=20, message="issuance")
        short_pebble.stop()
        short_pebble.start()  # same directory URL, no accounts
        new_root = short_pebble.root_pem()  # a new CA instance has a new root

        def renewed_by_new_ca() -> bool:
            try:
                return _issued_serial(app, new_root) not in (None, first)
            except ssl.SSLCertVerificationError:
                return False  # still the certificate of the first instance

        wait_for(renewed_by_new_ca, timeout=30, message="a renewal under a new account")
        assert not _events(caplog, "acme-order-failed")
        assert app.metrics.value("geomail_acme_orders_total", lineage="mail",
                                 result="success") >= 2


def test_web_lineage_chosen_by_sni(tmp_path: Path, pebble: Pebble, web_port: int) -> None:
    """RFC 8555 7.4 and RFC 6066 3 (SNI): with a webs listener a second lineage covers the
    MTA-STS and autoconfig names; the webs listener serves it for those names and the mail
    certificate for the hostname."""
    root = pebble.root_pem()
    with running_app(_config(tmp_path, pebble, web_port, webs=True)) as app:
        port = app.ports["webs"][0]
        def web_certificate() -> x509.Certificate | None:
            cert = _served(port, name="mta-sts.example.com")  # the mail one until then
            return cert if "mta-sts.example.com" in _names(cert) else None

        web = wait_for(web_certificate, timeout=20, message="the web certificate")
        assert web is not None
        assert "autodiscover.test.com" in _names(web) and HOSTNAME not in _names(web)
        assert _served(port, root, "autoconfig.test.com").serial_number == web.serial_number
        mail = wait_for(lambda: _issued_serial(app, root), timeout=20, message="mail cert")
        assert _served(port, root, HOSTNAME).serial_number == mail != web.serial_number


def test_failing_web_names_leave_mail_certificate_alone(
        tmp_path: Path, web_port: int, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 7.1.6 / 8.3: when the web names cannot be validated (no DNS for
    mta-sts./autoconfig./autodiscover.), only the web lineage fails; the mail lineage is
    issued and served on 465, and webs keeps serving the mail certificate."""
    caplog.set_level(logging.INFO)
    with Dnsmasq().host(HOSTNAME, "127.0.0.1") as only_mail:
        ca = Pebble(web_port, only_mail.nameserver).start()
        try:
            root = ca.root_pem()
            with running_app(_config(tmp_path, ca, web_port, webs=True)) as app:
                serial = wait_for(lambda: _issued_serial(app, root), timeout=20,
                                  message="the mail certificate")
                wait_for(lambda: [e for e in _events(caplog, "acme-order-failed")
                                  if "lineage=web" in e], timeout=30,
                         message="the web order failing")
                assert _served(app.ports["webs"][0], None,
                               "mta-sts.example.com").serial_number == serial
                assert _served(app.ports["submissions"][0], root).serial_number == serial
                assert app.metrics.value("geomail_acme_orders_total", lineage="web",
                                         result="failure") >= 1
        finally:
            ca.close()


def test_check_explains_acme(tmp_path: Path, pebble: Pebble, web_port: int,
                             dnsmasq: Dnsmasq) -> None:
    """RFC 8555 8.3: ``geomail check`` says what http-01 needs (port 80, A/AAAA records) and
    warns about what is missing."""
    config = parse_config(_config(tmp_path, pebble, web_port, webs=True))
    resolver = dnsmasq.resolver()
    lines, warnings = acme_report(config, resolver)
    text = "\n".join(lines)
    assert "port 80" in text and f"{HOSTNAME}: 127.0.0.1" in text
    assert "mail  certificate: none yet" in text
    assert any("no listen.web on port 80" in w for w in warnings)
    assert not any("has no A/AAAA" in w for w in warnings)
    missing = parse_config({**_config(tmp_path, pebble, web_port), "hostname": "nx.acme.test"})
    _lines, warnings = acme_report(missing, resolver)
    assert any("nx.acme.test (mail certificate) has no A/AAAA" in w for w in warnings)

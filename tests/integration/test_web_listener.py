"""The public web listeners over real sockets: ACME http-01 challenges on plain HTTP
(RFC 8555 8.3), everything else redirected to HTTPS, our MTA-STS policy over verified HTTPS
(RFC 8461 3.3), and a certificate reload reaching new HTTPS connections."""

from __future__ import annotations

import http.client
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme


def fetch(port: int, host: str, path: str, method: str = "GET", body: bytes | None = None,
          tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:port with ``Host: host``; (status, headers, body)."""
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
    try:
        conn.request(method, path, body=body, headers={"Host": host})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def own_tls(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """Certificate files of this test's own (so a reload may overwrite them)."""
    cert = ca.issue_cert("127.0.0.1", "mx.test.com")
    chain, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return {"cert": str(chain), "key": str(key)}


@pytest.fixture
def web_app(make_app: Any, own_tls: dict[str, str]) -> Any:
    return make_app(tls=own_tls, listen={
        "smtp": ["127.0.0.1:0"], "submissions": ["127.0.0.1:0"], "pop3s": ["127.0.0.1:0"],
        "web": ["127.0.0.1:0"], "webs": ["127.0.0.1:0"]})


def test_acme_challenge_is_served_on_plain_http_from_app_challenges(web_app: Any) -> None:
    """RFC 8555 8.3: GET /.well-known/acme-challenge/<token> on port 80 answers the key
    authorization as the body, not redirected; an unknown token is 404."""
    port = web_app.ports["web"][0]
    web_app.challenges.put("tok_EN-1", "tok_EN-1.thumbprint")
    status, headers, body = fetch(port, "mx.test.com", "/.well-known/acme-challenge/tok_EN-1")
    assert (status, body) == (200, b"tok_EN-1.thumbprint")
    assert headers["Content-Type"].startswith("text/plain")
    status, _, body = fetch(port, "mx.test.com", "/.well-known/acme-challenge/other")
    assert status == 404
    web_app.challenges.remove("tok_EN-1")
    assert fetch(port, "mx.test.com", "/.well-known/acme-challenge/tok_EN-1")[0] == 404


def test_plain_http_redirects_to_https_and_unknown_hosts_are_refused(web_app: Any) -> None:
    """RFC 8461 3.3: the policy is only served over HTTPS; plain HTTP gets a 301 to the same
    host and path on https. A Host that is not ours is 421 (RFC 9110 15.5.20)."""
    port = web_app.ports["web"][0]
    status, headers, _ = fetch(port, "mta-sts.test.com", "/.well-known/mta-sts.txt")
    assert status == 301
    assert headers["Location"] == "https://mta-sts.test.com/.well-known/mta-sts.txt"
    assert fetch(port, "evil.example.net", "/.well-known/mta-sts.txt")[0] == 421


def test_mta_sts_policy_over_verified_https(web_app: Any, client_tls: ssl.SSLContext) -> None:
    """RFC 8461 3.2/3.3: https://mta-sts.<domain>/.well-known/mta-sts.txt, text/plain, CRLF
    lines, with version, mode, mx and max_age; other paths are 404."""
    port = web_app.ports["webs"][0]
    status, headers, body = fetch(port, "mta-sts.example.com", "/.well-known/mta-sts.txt",
                                  tls=client_tls)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert body == b"version: STSv1\r\nmode: testing\r\nmx: mx.test.com\r\nmax_age: 604800\r\n"
    assert fetch(port, "mta-sts.example.com", "/index.html", tls=client_tls)[0] == 404
    status, _, body = fetch(port, "autoconfig.test.com", "/mail/config-v1.1.xml",
                            tls=client_tls)
    assert status == 200 and b"<hostname>mx.test.com</hostname>" in body


def test_certificate_reload_reaches_new_https_connections(
        web_app: Any, ca: trustme.CA, own_tls: dict[str, str], tmp_path: Path,
        client_tls: ssl.SSLContext) -> None:
    """RFC 8555 7.4.2 renewal in practice: after the certificate files change and the holder
    reloads (what SIGHUP and the ACME manager do), a new HTTPS connection sees the new
    certificate, without restarting the listener."""
    port = web_app.ports["webs"][0]

    def serial() -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client_tls)
        try:
            conn.connect()
            der = conn.sock.getpeercert(binary_form=True)
            assert der is not None
        finally:
            conn.close()
        from cryptography import x509
        return x509.load_der_x509_certificate(der).serial_number

    before = serial()
    fresh = ca.issue_cert("127.0.0.1", "mx.test.com")
    staging = tmp_path / "new"
    staging.mkdir()
    fresh.private_key_pem.write_to_path(str(staging / "key"))
    (staging / "chain").write_bytes(b"".join(blob.bytes() for blob in fresh.cert_chain_pems))
    shutil.copy(staging / "chain", own_tls["cert"])
    shutil.copy(staging / "key", own_tls["key"])
    assert web_app.tls.reload()
    after = serial()
    assert after != before
    from cryptography import x509
    assert after == x509.load_pem_x509_certificate(fresh.cert_chain_pems[0].bytes()).serial_number


def test_stalled_tls_client_is_cut_and_others_are_served(
        web_app: Any, client_tls: ssl.SSLContext) -> None:
    """RFC 8314 3 (implicit TLS): a client that connects and never handshakes does not block
    the listener; a real client is served meanwhile."""
    import socket
    port = web_app.ports["webs"][0]
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        status, _, _ = fetch(port, "mta-sts.test.com", "/.well-known/mta-sts.txt", tls=client_tls)
        assert status == 200
    finally:
        idle.close()


def test_oversized_headers_and_slow_clients_are_bounded(make_app: Any,
                                                        own_tls: dict[str, str]) -> None:
    """RFC 9110 5.4/RFC 9112 2.3 leave request size to the server: a request with too many
    header lines is refused, and a client that stops mid-request is closed after
    web.request_timeout."""
    import socket
    import time
    app = make_app(tls=own_tls, web={"request_timeout": "1s"},
                   listen={"smtp": ["127.0.0.1:0"], "web": ["127.0.0.1:0"]})
    port = app.ports["web"][0]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: mx.test.com\r\n"
                     + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 4")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: mx.te")
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < 5


def test_sighup_swaps_the_https_certificate_in_a_running_server(
        tmp_path: Path, ca: trustme.CA, client_tls: ssl.SSLContext) -> None:
    """RFC 8461 3.3 needs a valid certificate on the policy host: after new files are written
    and SIGHUP sent to ``geomail serve``, new HTTPS connections get the new certificate."""
    import signal

    from tests.support import wait_for
    from tests.support.geomail import GeomailProcess
    from tests.support.smtp import process_config

    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"

    def write(authority: trustme.CA) -> None:
        issued = authority.issue_cert("127.0.0.1", "mx.test.com")
        issued.private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))

    write(ca)
    config = process_config(tmp_path, tls={"cert": str(cert), "key": str(key)},
                            listen={"smtp": ["127.0.0.1:0"], "webs": ["127.0.0.1:0"]})
    server = GeomailProcess(config)
    server.start()
    try:
        port = server.port("webs")
        path = "/.well-known/mta-sts.txt"
        assert fetch(port, "mta-sts.test.com", path, tls=client_tls)[0] == 200
        new_ca = trustme.CA()
        new_context = ssl.create_default_context()
        new_ca.configure_trust(new_context)
        write(new_ca)
        server.signal(signal.SIGHUP)

        def new_certificate_served() -> bool:
            try:
                return fetch(port, "mta-sts.test.com", path, tls=new_context)[0] == 200
            except ssl.SSLCertVerificationError:
                return False

        wait_for(new_certificate_served, timeout=10, interval=0.05, message="the new cert")
        with pytest.raises(ssl.SSLCertVerificationError):
            fetch(port, "mta-sts.test.com", path, tls=client_tls)
    finally:
        server.stop()

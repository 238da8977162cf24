"""Fixtures for integration tests: a throwaway CA, and geomail apps on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support import free_port_on
from tests.support.dns import Dnsmasq
from tests.support.geomail import base_config, running_app
from tests.support.outbound import make_zone


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority made for this test run."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Server certificate chain and key for localhost / 127.0.0.1 / mx.test.com, as PEM files."""
    cert = ca.issue_cert("localhost", "127.0.0.1", "mx.test.com")
    directory = tmp_path_factory.mktemp("tls")
    chain = directory / "fullchain.pem"
    key = directory / "privkey.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return {"cert": str(chain), "key": str(key), "ca": str(ca_file)}


@pytest.fixture
def client_tls(tls_files: dict[str, str]) -> ssl.SSLContext:
    """A client context that trusts the test CA (and checks the host name)."""
    return ssl.create_default_context(cafile=tls_files["ca"])


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start an in-process App: ``app = make_app(listen={...}, limits={...})``."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> Any:
            return stack.enter_context(running_app(base_config(tmp_path, **overrides)))

        yield start


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    """An App with one SMTP listener (port 25 role) on 127.0.0.1."""
    return make_app()


@pytest.fixture
def tls_app(make_app: Callable[..., Any], tls_files: dict[str, str]) -> Any:
    """An App with smtp, submission, submissions, pop3 and pop3s listeners and TLS."""
    return make_app(
        tls={"cert": tls_files["cert"], "key": tls_files["key"]},
        listen={
            "smtp": ["127.0.0.1:0"], "submission": ["127.0.0.1:0"],
            "submissions": ["127.0.0.1:0"], "pop3": ["127.0.0.1:0"], "pop3s": ["127.0.0.1:0"],
        },
    )


@pytest.fixture(scope="module")
def mx_port(request: pytest.FixtureRequest) -> int:
    """A port free on every address of the test module's ``MX`` table (domain -> address)."""
    return free_port_on(sorted(request.module.MX.values()))


@pytest.fixture(scope="module")
def zone(request: pytest.FixtureRequest) -> Iterator[Dnsmasq]:
    """dnsmasq serving the test module's ``MX`` table (``make_zone``) for the module."""
    server = make_zone(request.module.MX)
    yield server
    server.stop()

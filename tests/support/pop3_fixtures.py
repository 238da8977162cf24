"""POP3 test fixtures, loaded with ``pytest_plugins = ["tests.support.pop3_fixtures"]``.

``store_format`` is parametrized, so every test that uses it runs with the Maildir and with the
mbox store; ``pop3_tls`` is a certificate from the session's test CA that also carries a subject
CN (fetchmail's ``sslcertck`` insists on one); ``pop3_app`` serves smtp, two pop3 listeners
(plaintext login allowed / STLS required) and pop3s.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from tests.support.pop3 import pop3_overrides


@pytest.fixture(params=["maildir", "mbox"])
def store_format(request: pytest.FixtureRequest) -> str:
    """The same suite runs with the Maildir and the mbox store."""
    return str(request.param)


@pytest.fixture(scope="session")
def pop3_tls(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Certificate for localhost / 127.0.0.1 with CN=localhost, its key, and the CA file."""
    cert = ca.issue_cert("localhost", "127.0.0.1", "mx.test.com", common_name="localhost")
    directory = tmp_path_factory.mktemp("pop3-tls")
    files = {"cert": directory / "fullchain.pem", "key": directory / "privkey.pem",
             "ca": directory / "ca.pem"}
    cert.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return {key: str(path) for key, path in files.items()}


@pytest.fixture
def pop3_app(make_app: Callable[..., Any], pop3_tls: dict[str, str], store_format: str) -> Any:
    """An in-process App with SMTP and POP3 listeners over a ``store_format`` store."""
    return make_app(**pop3_overrides(pop3_tls, store_format))


@pytest.fixture
def pop3_client_tls(pop3_tls: dict[str, str]) -> ssl.SSLContext:
    """A client context that trusts the test CA and checks the host name."""
    return ssl.create_default_context(cafile=pop3_tls["ca"])

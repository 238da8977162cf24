"""Sender authentication for inbound tests (issue 12): DKIM keys the tests make and publish on
a ``Dnsmasq``, messages signed with dkimpy (DKIM, RFC 6376 / RFC 8463; ARC, RFC 8617), a zone of
SPF / DKIM / DMARC records for test domains, and readers for what geomail stored and reported
(the Authentication-Results header, RFC 8601; the Junk folder; the ``auth-checked`` log line)."""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import itertools
import logging
import re
import smtplib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import authres
import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.support import wait_for
from tests.support.dns import Dnsmasq
from tests.support.geomail import base_config, running_app
from tests.support.stored import Stored, maildir, maildir_messages, mbox_messages, split

AUTHSERV_ID = "mx.test.com"  # base_config's hostname
CLIENT_IP = "127.0.0.1"  # every test client connects from here (unless it binds 127.0.0.2)
CLIENT_NAME = "client.sender.test"  # PTR of 127.0.0.1, whose A is 127.0.0.1 (iprev pass)
RCPT = "alice@example.com"


# ------------------------------------------------------------------ keys and signatures


@dataclass(frozen=True)
class DKIMKey:
    """A DKIM key pair: what dkimpy signs with and the TXT record that publishes it."""

    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: bytes  # RSA: PKCS#1 PEM; Ed25519: the base64 32-octet seed (dkimpy's format)
    record: str  # "v=DKIM1; k=...; p=..."


def rsa_key(bits: int = 2048) -> DKIMKey:
    """An RSA key (RFC 6376 3.3.1): p= is the base64 SubjectPublicKeyInfo."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return DKIMKey(b"rsa-sha256", pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")


def ed25519_key() -> DKIMKey:
    """An Ed25519 key (RFC 8463 4.2): p= is the base64 raw 32-octet public key."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    return DKIMKey(b"ed25519-sha256", base64.b64encode(seed),
                   f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}")


SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


def dkim_sign(message: bytes, key: DKIMKey, selector: str, domain: str) -> bytes:
    """``message`` (CRLF) with a DKIM-Signature (relaxed/simple) for d=domain, s=selector
    prepended, as a signing MTA sends it."""
    header = dkim.sign(message, selector.encode(), domain.encode(), key.private,
                       signature_algorithm=key.algorithm, include_headers=SIGNED_HEADERS)
    return bytes(header) + message


def arc_seal(message: bytes, key: DKIMKey, selector: str, domain: str) -> bytes:
    """``message`` as a forwarder at ``domain`` passes it on (RFC 8617 5.1): its own
    Authentication-Results (authserv-id ``domain``), then an ARC set (i=1) over it."""
    message = (f"Authentication-Results: {domain}; spf=pass smtp.mailfrom={domain}\r\n"
               .encode() + message)
    lines = dkim.arc_sign(message, selector.encode(), domain.encode(), key.private,
                          domain.encode(), signature_algorithm=key.algorithm,
                          include_headers=SIGNED_HEADERS)
    assert len(lines) == 3, lines  # ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results
    return b"".join(lines) + message


def dnsfunc(server: Dnsmasq) -> Any:
    """A dkimpy ``dnsfunc`` reading TXT records from ``server`` (to check our own signing)."""
    resolver = server.resolver()

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(next(iter(answer)).strings)

    return txt


_COUNTER = itertools.count(1)


def message(sender: str, *, token: str | None = None, to: str = RCPT,
            headers: Sequence[str] = (), body: str = "Hello.\r\n") -> tuple[str, bytes]:
    """(token, a CRLF message): ``From: sender`` (omitted when empty), a unique Subject and
    Message-ID carrying the token by which the stored copy is found."""
    token = token or f"auth{next(_COUNTER)}"
    lines = [f"From: {sender}"] if sender else []
    lines += [f"To: {to}", f"Subject: {token}", "Date: Sun, 06 Dec 2026 06:00:00 +0000",
              f"Message-ID: <{token}@tests.geomail>", *headers]
    return token, ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


# ------------------------------------------------------------------ the zone


@dataclass(frozen=True)
class Keys:
    """The keys a test module signs with (made once per module)."""

    rsa: DKIMKey
    ed: DKIMKey

    @classmethod
    def make(cls) -> Keys:
        return cls(rsa_key(), ed25519_key())


# Domains with DKIM keys published as rsa._domainkey.D and ed._domainkey.D.
SIGNING_DOMAINS = ("dkim.test", "reject.test", "quarantine.test", "none.test", "strict.test",
                   "org-reject.test", "pct-reject.test", "pct-quarantine.test",
                   "forwarder.test")
# RFC 7208 test domains: the MAIL FROM domain tells the expected result.
SPF_ALL = {
    "spf-pass.test": "v=spf1 ip4:127.0.0.1 -all",
    "spf-fail.test": "v=spf1 ip4:192.0.2.1 -all",
    "spf-softfail.test": "v=spf1 ip4:192.0.2.1 ~all",
    "spf-neutral.test": "v=spf1 ip4:192.0.2.1 ?all",
    "spf-permerror.test": "v=spf1 ip4:127.0.0.1 ipv5:nonsense -all",  # unknown mechanism
    # 11 DNS-querying terms (RFC 7208 4.6.4: at most 10), every name exists (not void)
    "spf-toomany.test": "v=spf1 " + " ".join(f"a:h{i}.spf-toomany.test" for i in range(1, 12))
    + " ip4:127.0.0.1 -all",
    # 3 void lookups (RFC 7208 4.6.4: at most 2): names under .test that do not exist
    "spf-void.test": "v=spf1 a:v1.spf-void.test a:v2.spf-void.test a:v3.spf-void.test"
    " ip4:127.0.0.1 -all",
    "helo-pass.test": "v=spf1 ip4:127.0.0.1 -all",
    "helo-fail.test": "v=spf1 -all",
    # DMARC test domains send from 127.0.0.1 (SPF pass for an aligned MAIL FROM)
    "reject.test": "v=spf1 ip4:127.0.0.1 -all",
    "mail.reject.test": "v=spf1 ip4:127.0.0.1 -all",
    "mail.strict.test": "v=spf1 ip4:127.0.0.1 -all",
    "none.test": "v=spf1 -all",
    "quarantine.test": "v=spf1 -all",
}
DMARC = {
    "reject.test": "v=DMARC1; p=reject",
    "quarantine.test": "v=DMARC1; p=quarantine",
    "none.test": "v=DMARC1; p=none",
    "strict.test": "v=DMARC1; p=reject; adkim=s; aspf=s",
    "org-reject.test": "v=DMARC1; p=none; sp=reject",  # sp= for subdomains (RFC 7489 6.3)
    "pct-reject.test": "v=DMARC1; p=reject; pct=0",
    "pct-quarantine.test": "v=DMARC1; p=quarantine; pct=0",
}
TIMEOUT_DOMAIN = "spf-temperror.test"
DMARC_TIMEOUT_DOMAIN = "dmarc-slow.test"  # only its _dmarc name times out
LIAR_IP = "127.0.0.3"  # PTR liar.sender.test, whose A is elsewhere (iprev fail)


def auth_zone(keys: Keys) -> Dnsmasq:
    """dnsmasq serving every record the inbound-auth tests use (not started)."""
    zone = Dnsmasq()
    for domain, record in SPF_ALL.items():
        zone.txt(domain, record)
    for i in range(1, 12):
        zone.host(f"h{i}.spf-toomany.test", f"192.0.2.{i}")
    for domain, record in DMARC.items():
        zone.txt(f"_dmarc.{domain}", record)
    for domain in SIGNING_DOMAINS:
        zone.txt(f"rsa._domainkey.{domain}", keys.rsa.record)
        zone.txt(f"ed._domainkey.{domain}", keys.ed.record)
    # Two DMARC records: no policy at all (RFC 7489 6.6.3 step 2), although both say reject.
    zone.txt("_dmarc.two.test", "v=DMARC1; p=reject")
    zone.txt("_dmarc.two.test", "v=DMARC1; p=reject; adkim=s")
    zone.timeout(f"_dmarc.{DMARC_TIMEOUT_DOMAIN}")
    zone.host("spf-none.test", "192.0.2.99")  # exists, but publishes no TXT
    zone.ptr(LIAR_IP, "liar.sender.test")
    zone.host("liar.sender.test", "192.0.2.7")
    zone.host(CLIENT_NAME, CLIENT_IP)
    zone.ptr(CLIENT_IP, CLIENT_NAME)
    # Reverse names not declared are NXDOMAIN (not REFUSED): 127.0.0.2 has no PTR.
    zone.args.append("--local=/127.in-addr.arpa/")
    zone.timeout(TIMEOUT_DOMAIN)
    return zone


def module_fixtures() -> tuple[Any, Any]:
    """The ``keys`` and ``zone`` fixtures of a test module (``keys, zone = module_fixtures()``):
    DKIM keys made once for the module, and ``auth_zone`` publishing them, running."""

    @pytest.fixture(scope="module")
    def keys() -> Keys:
        return Keys.make()

    @pytest.fixture(scope="module")
    def zone(keys: Keys) -> Iterator[Dnsmasq]:
        server = auth_zone(keys).start()
        yield server
        server.stop()

    return keys, zone


@contextlib.contextmanager
def inbound_app(tmp: Path, zone: Dnsmasq, checks: dict[str, Any] | None = None,
                **overrides: Any) -> Iterator[Any]:
    """An App whose port 25 checks mail from 127.0.0.1 (``skip_networks: []``), resolving
    through ``zone`` with a short DNS timeout; ``checks`` adds to the checks section."""
    relay = {"nameservers": [zone.nameserver], "dns_timeout": "2s",
             **overrides.pop("relay", {})}
    raw = base_config(tmp, checks={"skip_networks": [], **(checks or {})}, relay=relay,
                      **overrides)
    with running_app(raw) as app:
        yield app


# ------------------------------------------------------------------ sending


@dataclass(frozen=True)
class Outcome:
    """The server's final reply to one transaction (MAIL, RCPT or end of DATA)."""

    stage: str  # "mail", "rcpt" or "data"
    code: int
    text: str

    @property
    def queue_id(self) -> str:
        return self.text.rsplit(" ", 1)[-1]


def deliver(port: int, sender: str, data: bytes, *, helo: str = CLIENT_NAME,
            rcpt: str = RCPT, source: str | None = None, timeout: float = 20) -> Outcome:
    """One transaction with smtplib; stops at the first refusal."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout,
                      source_address=(source, 0) if source else None) as client:
        client.ehlo(helo)
        code, text = client.mail(sender)
        if code != 250:
            return Outcome("mail", code, text.decode("utf-8", "replace"))
        code, text = client.rcpt(rcpt)
        if code != 250:
            return Outcome("rcpt", code, text.decode("utf-8", "replace"))
        code, text = client.data(data)
        return Outcome("data", code, text.decode("utf-8", "replace"))


def accepted(outcome: Outcome) -> Outcome:
    assert outcome.stage == "data" and outcome.code == 250, outcome
    return outcome


# ------------------------------------------------------------------ reading what was stored


def junk_messages(store: str | Path, mailbox: str) -> list[Stored]:
    """The messages of the Maildir++ folder ``.Junk`` of ``mailbox`` (new/ and cur/)."""
    root = maildir(store, mailbox) / ".Junk"
    return [split(path.read_bytes()) for sub in ("new", "cur") if (root / sub).is_dir()
            for path in sorted((root / sub).iterdir())]


def find(app: Any, token: str, mailbox: str = RCPT) -> tuple[str, Stored] | None:
    """(folder, message) for the message whose Subject is ``token``: folder is "inbox" or
    "junk" (Maildir), "mbox" (mbox store); None when not (yet) stored."""
    store = app.config.store
    needle = f"\nSubject: {token}\n".encode()
    if store.format == "mbox":
        folders = {"mbox": [m for _s, m in mbox_messages(store.path, mailbox)]}
    else:
        folders = {"inbox": maildir_messages(store.path, mailbox),
                   "junk": junk_messages(store.path, mailbox)}
    found = [(folder, m) for folder, messages in folders.items() for m in messages
             if needle in b"\n" + m.body]
    assert len(found) <= 1, f"{token} stored {len(found)} times"
    return found[0] if found else None


def stored_copy(app: Any, token: str, mailbox: str = RCPT) -> tuple[str, Stored]:
    """(folder, message) of ``token``: waits briefly (delivery ends before the 250 reply)."""
    found = wait_for(lambda: find(app, token, mailbox), timeout=5,
                     message=f"message {token} in {mailbox}")
    assert found is not None
    return found


def header_fields(message: Stored) -> list[tuple[str, str]]:
    """The header fields of the stored message (after geomail's trace fields), unfolded."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message.body)
    return [(name, re.sub(r"\r?\n[ \t]", " ", str(value))) for name, value in parsed.items()]


def our_results(message: Stored) -> authres.AuthenticationResultsHeader:
    """The Authentication-Results header geomail added: the first field after its trace
    fields (RFC 8601 2.1: prepended), with our hostname as authserv-id; exactly one such."""
    fields = header_fields(message)
    assert fields, message.body[:300]
    name, value = fields[0]
    assert name.lower() == "authentication-results", f"first header is {name}: {value}"
    header = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
    assert header.authserv_id.lower() == AUTHSERV_ID, header.authserv_id
    ours = [v for n, v in results_fields(message) if authserv_id(v) == AUTHSERV_ID]
    assert len(ours) == 1, ours
    return header


def results_fields(message: Stored) -> list[tuple[str, str]]:
    """Every Authentication-Results field of the stored message, in order."""
    return [(n, v) for n, v in header_fields(message) if n.lower() == "authentication-results"]


_AUTHSERV = re.compile(r"\s*(?:\([^)]*\)\s*)*([^\s;(]+)")


def authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 2.2: before any version
    and the first ';'), lower case."""
    match = _AUTHSERV.match(value)
    return match[1].lower() if match else ""


def results(header: authres.AuthenticationResultsHeader, method: str) -> list[Any]:
    return [r for r in header.results if r.method == method]


def result(header: authres.AuthenticationResultsHeader, method: str) -> Any:
    """The one result of ``method`` (spf, arc, dmarc, iprev)."""
    found = results(header, method)
    assert len(found) == 1, (method, str(header))
    return found[0]


def prop(res: Any, ptype: str, name: str) -> str:
    """The value of property ``ptype.name`` (e.g. header.d) of one method result."""
    values = [p.value for p in res.properties if p.type == ptype and p.name == name]
    assert len(values) == 1, (ptype, name, str(res))
    return str(values[0])


def has_header(message: Stored, name: str, value: str) -> bool:
    return any(n.lower() == name.lower() and v.strip() == value
               for n, v in header_fields(message))


# ------------------------------------------------------------------ the log line


def auth_events(records: Sequence[logging.LogRecord]) -> list[dict[str, str]]:
    """The fields of every ``auth-checked`` event among ``records`` (caplog.records)."""
    return [{k: str(v) for k, v in getattr(r, "geomail_fields", {}).items()}
            for r in records if getattr(r, "geomail_event", None) == "auth-checked"]

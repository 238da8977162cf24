"""Outbound relay through the whole App: a DNS zone (dnsmasq) that points remote test domains
at loopback addresses, configs for the sending geomail and for a second geomail that receives
as the MX, and readers for what arrived (mailboxes, DSNs, queue items)."""

from __future__ import annotations

import email
import json
import os
import smtplib
from collections.abc import Mapping, Sequence
from email import policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from geomail.delivery import DeliveryError, Outcome
from tests.support.dns import Dnsmasq
from tests.support.geomail import PASSWORD, base_config
from tests.support.smtp import process_config

SELECTOR = "geomail"
# The sending geomail's listeners: port 25 and a submission listener that takes AUTH without
# TLS (loopback only).
SENDER_LISTEN = {"smtp": ["127.0.0.1:0"],
                 "submission": [{"address": "127.0.0.1:0", "allow_plaintext_auth": True}]}


def make_zone(mx_hosts: Mapping[str, str], dkim_txt: str | None = None) -> Dnsmasq:
    """dnsmasq serving ``domain MX 10 mx.<domain>`` and ``mx.<domain> A address`` for each of
    ``mx_hosts`` (domain -> address), and the DKIM key record of example.com; started."""
    zone = Dnsmasq()
    for domain, address in mx_hosts.items():
        zone.mx(domain, f"mx.{domain}", 10).host(f"mx.{domain}", address)
    if dkim_txt is not None:
        zone.txt(f"{SELECTOR}._domainkey.example.com", dkim_txt)
    return zone.start()


def relay_settings(zone: Dnsmasq, mx_port: int, **overrides: Any) -> dict[str, Any]:
    """``relay:`` for the sender: dnsmasq as the only resolver, the test MX port, short retry
    steps and timeouts, no delay warnings."""
    return {"nameservers": [zone.nameserver], "mx_port": mx_port, "retry": ["1s", "2s"],
            "delay_warning": 0, "connect_timeout": "2s", "command_timeout": "5s",
            "data_timeout": "5s", "dns_timeout": "2s", **overrides}


def sender_config(tmp_path: Path, zone: Dnsmasq, mx_port: int, *,
                  relay: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The sending geomail (hostname mx.test.com; example.com and test.com local): port 25 and
    a submission listener that takes AUTH without TLS (loopback), relaying through dnsmasq."""
    return base_config(tmp_path, listen=SENDER_LISTEN,
                       relay=relay_settings(zone, mx_port, **(relay or {})), **overrides)


def sender_process_config(tmp_path: Path, zone: Dnsmasq, mx_port: int, **relay: Any) -> Path:
    """``sender_config``'s listeners and relay (``relay`` overriding ``relay_settings``) as a
    geomail.yaml for a ``GeomailProcess`` (``geomail serve`` in a subprocess)."""
    return process_config(tmp_path, listen=SENDER_LISTEN,
                          relay=relay_settings(zone, mx_port, **relay))


def mx_config(directory: Path, address: str, port: int, domain: str,
              users: Sequence[str]) -> dict[str, Any]:
    """A second geomail that receives for ``domain`` on ``address:port`` (the MX the sender
    finds in DNS) and stores into its own Maildir; unknown users get 550 5.1.1."""
    return {"hostname": f"mx.{domain}", "domains": [domain], "data_dir": str(directory),
            "users": {f"{user}@{domain}": {} for user in users},
            "listen": {"smtp": [f"{address}:{port}"]}, "limits": {"shutdown_grace": "1s"}}


def submit(port: int, recipients: Sequence[str], data: bytes, *,
           sender: str = "alice@example.com", login: bool = True,
           source: str | None = None) -> str:
    """One transaction (AUTH as alice when ``login``); the queue id from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10,
                      source_address=(source, 0) if source else None) as client:
        client.ehlo("client.example")
        if login:
            client.login("alice@example.com", PASSWORD)
        code, text = client.mail(sender)
        assert code == 250, (code, text)
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = client.data(data)
        assert code == 250, (code, text)
    return text.decode().rsplit(" ", 1)[1]


def mailbox(store: str | Path, address: str) -> list[bytes]:
    """The raw messages in the Maildir of ``address`` under ``store`` (oldest name first)."""
    local, _, domain = address.rpartition("@")
    root = Path(store) / domain / local
    files = [p for sub in ("new", "cur") if (root / sub).is_dir() for p in (root / sub).iterdir()]
    return [p.read_bytes() for p in sorted(files, key=lambda p: p.name)]


def dnsfunc(zone: Dnsmasq):  # type: ignore[no-untyped-def]
    """A ``dkim.verify`` DNS function that asks dnsmasq for the TXT record (dnspython)."""
    resolver = zone.resolver()

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    return lookup


def parse_report(raw: bytes) -> tuple[EmailMessage, Message, list[Message], bytes]:
    """A DSN (RFC 3464) read with Python's ``email`` package: the message, its per-message
    fields, its per-recipient blocks, and the returned original headers."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    kinds = [p.get_content_type() for p in parts]
    assert kinds == ["text/plain", "message/delivery-status", "text/rfc822-headers"], kinds
    per_message, *per_recipient = parts[1].get_payload()
    return msg, per_message, per_recipient, parts[2].get_payload(decode=True)


def queue_items(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The queue items on disk (``<id>.json``, the format geomail/queue/item.py documents)."""
    directory = Path(data_dir) / "queue"
    found = {}
    for name in os.listdir(directory) if directory.is_dir() else ():
        if name.endswith(".json") and not name.startswith("."):
            try:
                found[name[:-5]] = json.loads((directory / name).read_bytes())
            except (FileNotFoundError, ValueError):
                continue  # replaced or removed while we looked
    return found


def statuses(item: Mapping[str, Any]) -> dict[str, str]:
    """recipient -> status of one queue item."""
    return {r["address"]: r["status"] for r in item["recipients"]}


def errors(outcomes: Mapping[str, Outcome]) -> dict[str, DeliveryError | None]:
    """A courier's outcomes reduced to each recipient's error (None: delivered)."""
    return {rcpt: outcome.error for rcpt, outcome in outcomes.items()}

"""The mail services clients are told about (autoconfiguration, SRV records): the configured
listeners, implicit TLS first (RFC 8314 5.1), STARTTLS next, never as plaintext."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from geomail.config.objects import Config, ListenerConfig

# Preference order within each protocol (RFC 8314 5.1: implicit TLS preferred).
# IMAP first: it keeps mail on the server, which is what clients on several devices want.
INCOMING_KINDS = ("imaps", "imap", "pop3s", "pop3")
OUTGOING_KINDS = ("submissions", "submission")
PROTOCOL = {"imaps": "imap", "imap": "imap", "pop3s": "pop3", "pop3": "pop3",
            "submissions": "smtp", "submission": "smtp"}
STANDARD_PORT = {"submissions": 465, "submission": 587, "imaps": 993, "imap": 143, "pop3s": 995,
                 "pop3": 110}


@dataclass(frozen=True, slots=True)
class ClientService:
    """One listener as a client sees it."""

    kind: str  # submissions, submission, imaps, imap, pop3s, pop3
    port: int

    @property
    def protocol(self) -> str:
        """``imap``, ``pop3`` or ``smtp``."""
        return PROTOCOL[self.kind]

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte (RFC 8314 3); otherwise STARTTLS/STLS is required."""
        return self.kind in ("submissions", "imaps", "pop3s")


def _public(listener: ListenerConfig) -> bool:
    return not ipaddress.ip_address(listener.host).is_loopback


def client_services(config: Config, kinds: tuple[str, ...]) -> list[ClientService]:
    """The listeners of ``kinds`` clients can reach, in ``kinds``' order, one per port.

    Loopback listeners are left out (a phone cannot reach them), except in a set-up where
    every mail listener is on loopback (development and tests)."""
    mail = config.listeners_of(*INCOMING_KINDS, *OUTGOING_KINDS, "smtp")
    all_local = not any(_public(lst) for lst in mail)
    out: list[ClientService] = []
    for kind in kinds:
        for lst in config.listeners_of(kind):
            service = ClientService(kind, lst.port)
            if (all_local or _public(lst)) and service not in out:
                out.append(service)
    return out


def incoming(config: Config) -> list[ClientService]:
    """Where clients fetch mail, best first."""
    return client_services(config, INCOMING_KINDS)


def outgoing(config: Config) -> list[ClientService]:
    """Where clients send mail, best first."""
    return client_services(config, OUTGOING_KINDS)

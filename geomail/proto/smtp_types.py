"""What an SMTP session shares with its connection and its policy: facts about the connection
(SessionInfo), the per-listener knobs (SMTPSettings) and the policy hooks (SMTPHandler)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from geomail.envelope import Envelope
from geomail.proto.reply import Reply
from geomail.proto.sasl import Credentials


class BodySink(Protocol):
    """Where the session writes the (LF-normalised) content of the message it receives."""

    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


@dataclass(slots=True)
class SessionInfo:
    """Facts about the connection that policy and logs need (not the transaction)."""

    session_id: str
    peer_ip: str
    peer_port: int = 0
    listener: str = "smtp"  # smtp, submission or submissions
    tls: str | None = None  # e.g. "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384" once active
    helo: str | None = None
    esmtp: bool = False
    auth_user: str | None = None

    def protocol(self, smtputf8: bool = False) -> str:
        """The ``with`` keyword of a Received header (RFC 3848, RFC 6531 3.7.3)."""
        if not self.esmtp:
            return "SMTP"
        name = "UTF8SMTP" if smtputf8 else "ESMTP"
        return name + ("S" if self.tls else "") + ("A" if self.auth_user else "")


@dataclass(frozen=True, slots=True)
class SMTPSettings:
    """The per-listener knobs of a session (from the config's limits and listener)."""

    hostname: str
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 0  # message text line with CRLF; 0: only the message size bounds it
    max_command_length: int = 512
    max_bad_commands: int = 10  # protocol errors (5.5.x replies) before 421
    soft_error_limit: int = 10  # refused commands before each further refusal is delayed
    hard_error_limit: int = 20  # refused commands before 421
    error_sleep_time: float = 1.0  # the delay, in seconds
    junk_command_limit: int = 100  # NOOP RSET VRFY HELP EXPN HELO EHLO before they count as errors
    max_received_headers: int = 50  # Received fields a message may carry (RFC 5321 6.3)
    tls_available: bool = False  # a certificate is configured: offer STARTTLS until active
    allow_plaintext_auth: bool = False
    banner: str = field(default="ESMTP geomail")


class SMTPHandler(Protocol):
    """Policy hooks; they run in the connection's greenlet and may block cooperatively."""

    def check_sender(self, info: SessionInfo, envelope: Envelope) -> Reply | None:
        """None accepts ``envelope.sender``; a Reply refuses it."""

    def check_recipient(self, info: SessionInfo, envelope: Envelope, address: str) -> Reply | None:
        """None accepts ``address``; a Reply refuses it."""

    def authenticate(self, info: SessionInfo, credentials: Credentials) -> str | Reply:
        """The canonical user on success; else the Reply to send (421 closes)."""

    def open_body(self, info: SessionInfo, envelope: Envelope) -> BodySink:
        """A sink for the content about to be received."""

    def accept_message(self, info: SessionInfo, envelope: Envelope, body: BodySink) -> Reply:
        """Make the message durable (250) or refuse it; owns ``body`` from now on."""

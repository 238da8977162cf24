"""What an SMTP session shares with its shell: facts about the connection (SessionInfo), the
per-listener knobs (SMTPSettings), the session's State, and the requests the session hands out
for the shell to answer (h11's events: the session itself never calls anything)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from geomail.envelope import Envelope, RecipientDSN
from geomail.proto.reply import Reply
from geomail.proto.sasl import Credentials

# ---- requests: the session stops reading until the shell calls ``answer`` ------------------


@dataclass(frozen=True, slots=True)
class CheckSender:
    """MAIL FROM passed the session's checks: answer None to accept, or a refusing Reply."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class CheckRecipient:
    """RCPT TO passed the session's checks: answer None to accept, or a refusing Reply."""

    envelope: Envelope
    address: str
    dsn: RecipientDSN | None = None  # NOTIFY/ORCPT given (RFC 3461 4.1, 4.2)


@dataclass(frozen=True, slots=True)
class Authenticate:
    """A SASL exchange ended with credentials: answer the canonical user, or a Reply (421
    closes)."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The content ended well: answer the Reply (250 once durable). The shell owns the body."""

    envelope: Envelope


# ---- notices: no answer, the session goes on --------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageStart:
    """DATA or the first BDAT chunk of a transaction: open a body sink for ``envelope``."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class MessageData:
    """Message content, LF-normalised and unstuffed, in order: append it to the body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """The message being received is dropped (fault, RSET, mail loop, end): discard the body."""


Request = CheckSender | CheckRecipient | Authenticate | MessageComplete
Answer = Reply | str | None  # what ``SMTPSession.answer`` takes (see each request)


@dataclass(slots=True)
class SessionInfo:
    """Facts about the connection that policy and logs need (not the transaction)."""

    session_id: str
    peer_ip: str
    peer_port: int = 0
    tls: str | None = None  # e.g. "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384" once active
    helo: str | None = None
    esmtp: bool = False
    auth_user: str | None = None
    service: str = ""  # the listener's kind: "smtp" (port 25), "submission", "submissions"
    dnswl: str | None = None  # the DNSWL zone that listed the client at connect (RFC 5782)

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
    auth_offered: bool = False  # advertise and accept AUTH (RFC 4954)
    auth_required: bool = False  # MAIL needs a login first (RFC 6409 4.3)
    tls_required_for_auth: bool = True  # AUTH only once TLS is active (RFC 4954 4)
    implicit_tls: bool = False  # TLS starts before the greeting (RFC 8314 3.3)
    banner: str = field(default="ESMTP geomail")


class State(enum.Enum):
    """Where the session is in RFC 5321's command sequence."""

    INITIAL = "initial"  # greeted, no HELO/EHLO yet
    READY = "ready"  # HELO/EHLO done, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading DATA content
    BDAT = "bdat"  # reading a BDAT chunk
    AUTH = "auth"  # inside an AUTH exchange
    REFUSED = "refused"  # greeted with 554 (RFC 5321 3.1): only QUIT, anything else 503
    CLOSED = "closed"

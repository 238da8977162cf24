"""SMTP replies (RFC 5321 4.2, enhanced codes RFC 3463) and the other outputs a session emits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply; multi-line when ``text`` holds several lines (RFC 5321 4.2.1)."""

    code: int
    enhanced: str | None  # RFC 3463 "x.y.z"; None for the greeting and EHLO (RFC 2034 3)
    text: str | tuple[str, ...]
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        if isinstance(self.text, str):  # the common case, built once per message or less
            wire1 = f"{self.code} {prefix}{self.text}\r\n".encode("utf-8", "replace")
            object.__setattr__(self, "wire", wire1)
            return
        lines = self.text
        last = len(lines) - 1
        wire = "".join(
            f"{self.code}{' ' if i == last else '-'}{prefix}{line}\r\n"
            for i, line in enumerate(lines)
        )
        object.__setattr__(self, "wire", wire.encode("utf-8", "replace"))

    @property
    def is_error(self) -> bool:
        """4xx and 5xx replies."""
        return self.code >= 400

    def with_text(self, text: str) -> Reply:
        """The same codes with another text."""
        return Reply(self.code, self.enhanced, text)

    def __str__(self) -> str:
        return self.wire.decode("utf-8", "replace").rstrip("\r\n")


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Output: the 220 reply has been queued; upgrade the connection to TLS now (RFC 3207)."""


@dataclass(frozen=True, slots=True)
class Close:
    """Output: close the connection after sending the replies before it."""


@dataclass(frozen=True, slots=True)
class Delay:
    """Output: send the replies before it, then wait ``seconds`` before going on (a client
    that keeps making errors is slowed down: Postfix's ``smtpd_error_sleep_time``)."""

    seconds: float


# The replies geomail sends, named after their code and meaning (enhanced codes: RFC 3463).
R214_HELP = Reply(214, "2.0.0", ("Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
                                 "HELP STARTTLS AUTH", "See RFC 5321"))
R221_BYE = Reply(221, "2.0.0", "Bye")
R235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R250_OK = Reply(250, "2.0.0", "OK")
R250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
R250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
R250_RESET = Reply(250, "2.0.0", "Reset state")
R252_CANNOT_VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message "
                                        "and attempt delivery")
R354_START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
R220_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
R421_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
R421_TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
R421_SHUTTING_DOWN = Reply(421, "4.3.2", "Server shutting down, try again later")
R421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
R421_TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, "
                                             "try again later")
R421_AUTH_BLOCKED = Reply(421, "4.7.0", "Too many failed logins, try again later")
R451_LOCAL_ERROR = Reply(451, "4.3.0", "Internal error, please try again later")
R452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
R454_AUTH_BLOCKED = Reply(454, "4.7.0", "Too many failed logins from your address, try again later")
R500_UNRECOGNIZED = Reply(500, "5.5.2", "Command unrecognized")
R500_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
R501_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
R501_AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
R501_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 data")
R502_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
R502_HTTP = Reply(502, "5.5.1", "This is an SMTP server, not a web server")
R503_BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
R503_HELO_FIRST = Reply(503, "5.5.1", "Send HELO/EHLO first")
R503_NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
R503_NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
R503_ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
R503_REFUSED = Reply(503, "5.5.1", "Bad sequence of commands: service refused, send QUIT")
R504_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
R521_BARE_NEWLINE = Reply(521, "5.5.2", "Bare CR or LF received; lines must end in CRLF "
                                         "(RFC 5321 2.3.8), closing connection")
R530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
R535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R538_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for authentication")
R550_NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
R552_TOO_BIG = Reply(552, "5.3.4", "Message too big for system")
R553_BAD_ADDRESS = Reply(553, "5.1.3", "Bad address syntax")
R553_NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
R553_NOT_YOUR_ADDRESS = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
R554_NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
R554_RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
R554_LINE_TOO_LONG = Reply(554, "5.6.0", "Message has a line longer than the limit")
R554_MAIL_LOOP = Reply(554, "5.4.6", "Too many Received header fields, mail loop detected "
                                      "(RFC 5321 6.3)")
R554_BARE_NEWLINE_IN_BDAT = Reply(554, "5.6.0", "Message data has a bare CR or LF (RFC 5321 2.3.8)")
R554_TLS_PIPELINED = Reply(554, "5.5.1", "Commands pipelined after STARTTLS, closing connection")
R555_UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter")

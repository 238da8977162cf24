"""The SMTP session's error and junk limits, as Postfix's smtpd_soft_error_limit,
smtpd_hard_error_limit, smtpd_error_sleep_time and smtpd_junk_command_limit.

Every refused command (a 4xx or 5xx reply) counts as an error; past ``soft_error_limit``
errors each further refusal is preceded by a ``Delay`` output, at ``hard_error_limit`` the
session ends with 421 4.7.0. NOOP, RSET, VRFY, HELP, EXPN, HELO, EHLO and recipients over the
limit (452 4.5.3) are junk: past ``junk_command_limit`` each counts as an error too. Both counts
restart when a message is accepted. Protocol errors (5.5.x) are also bounded on their own by
``max_bad_commands``.
"""

from __future__ import annotations

from collections.abc import Callable

from geomail.proto.reply import Delay, Reply
from geomail.proto.smtp_types import SMTPSettings

# Commands that make no progress towards a message (Postfix's junk commands, plus HELO/EHLO).
JUNK_VERBS = frozenset({"NOOP", "RSET", "VRFY", "HELP", "EXPN", "HELO", "EHLO"})


class ErrorLimits:
    """The counters of one session against its error, junk and bad-command limits."""

    __slots__ = ("bad_commands", "errors", "junk", "settings")

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self.bad_commands = 0  # protocol errors, for max_bad_commands
        self.errors = 0  # refused commands since the last accepted message
        self.junk = 0  # junk commands since the last accepted message

    def respond(self, reply: Reply, emit: Callable[[Reply | Delay], None], junk: bool,
                protocol: bool) -> bool:
        """Emit ``reply`` (after a ``Delay`` past the soft limit) and count it;
        True when a hard limit is reached and the session must end with 421."""
        settings = self.settings
        overshoot = reply.code == 452 and reply.enhanced == "4.5.3"  # too many recipients
        error = reply.is_error and not overshoot
        if junk or overshoot:
            self.junk += 1
            error = error or self.junk > settings.junk_command_limit
        if error:
            self.errors += 1
            if (settings.soft_error_limit < self.errors < settings.hard_error_limit
                    and settings.error_sleep_time > 0):
                emit(Delay(settings.error_sleep_time))
        emit(reply)
        if protocol:
            self.bad_commands += 1
        return (error and self.errors >= settings.hard_error_limit) or (
            self.bad_commands >= settings.max_bad_commands)

    def progress(self) -> None:
        """A message was accepted: the error and junk counts restart."""
        self.errors = self.junk = 0

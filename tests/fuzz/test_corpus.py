"""The fuzzers' seeds (tests/support/corpus.py) really are the dialog tests' conversations."""

from __future__ import annotations

from tests.support.corpus import pop3_conversations, smtp_conversations
from tests.support.pop3_session import LOGIN
from tests.support.smtp_session import EHLO, MAIL, RCPT


def test_seeds_come_from_unit_and_integration_tests() -> None:
    """The fuzzers start from the conversations of the SMTP (RFC 5321) and
    POP3 (RFC 1939) dialog tests, read from both the session unit tests and the socket
    integration tests; a change that stops the harvest fails here, not silently."""
    smtp, pop3 = smtp_conversations(), pop3_conversations()
    assert len(smtp) >= 50 and len(pop3) >= 20
    # tests/unit/test_proto_smtp.py: converse(b"DATA now\r\n", setup=TXN)
    assert EHLO + MAIL + RCPT + b"DATA now\r\n" in smtp
    # tests/integration/test_smtp_conversation.py: test_mail_bad_address
    assert b"EHLO client.example\r\nMAIL FROM:<no at sign>\r\n" in smtp
    assert any(c.startswith(LOGIN) for c in pop3)
    assert any(b"RETR" in c for c in pop3)

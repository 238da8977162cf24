"""queue.dsn: delivery status notifications in RFC 3464 form (multipart/report, RFC 6522)."""

from __future__ import annotations

import email
from email import policy

from geomail.queue.dsn import DSNRecipient, build_dsn, original_headers

HEADERS = b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: Lunch\n"


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def make(*rcpts: DSNRecipient, sender: str = "alice@example.com") -> bytes:
    return build_dsn(reporting_mta="mail.example.com", sender=sender, recipients=rcpts,
                     headers=HEADERS, queue_id="018f00000000abcdef1234",
                     arrival=1_700_000_000.0, now=1_700_000_100.0,
                     postmaster="postmaster@example.com")


def test_failed_report_structure() -> None:
    """RFC 3464 2 / RFC 6522: multipart/report; report-type=delivery-status with a readable
    part, a message/delivery-status part and the original headers (text/rfc822-headers)."""
    raw = make(DSNRecipient("bob@example.org", "failed", "5.1.1",
                            original_recipient="team@example.com",
                            remote_mta="mx.example.org [192.0.2.1]:25",
                            diagnostic="550 5.1.1 No such user", last_attempt=1_700_000_050.0))
    assert b"\r" not in raw  # LF inside geomail; couriers make CRLF
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "alice@example.com"
    assert "MAILER-DAEMON@mail.example.com" in msg["From"]
    assert msg["Auto-Submitted"] == "auto-replied"
    text, status, headers = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "<bob@example.org>: 550 5.1.1 No such user" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.example.com"
    assert per_message["Arrival-Date"].endswith("+0000")
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.org"
    assert per_rcpt["Original-Recipient"] == "rfc822; team@example.com"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.org"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert per_rcpt["Last-Attempt-Date"]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Lunch" in headers.get_payload(decode=True).decode()


def test_delayed_report() -> None:
    """RFC 3464 2.3.3 / 2.3.9: Action delayed, a 4.x.x Status and Will-Retry-Until."""
    msg = parse(make(DSNRecipient("bob@example.org", "delayed", "4.4.1",
                                  diagnostic="connection refused", diagnostic_is_smtp=False,
                                  will_retry_until=1_700_400_000.0)))
    assert "Delayed" in msg["Subject"]
    per_rcpt = msg.get_payload()[1].get_payload()[1]
    assert per_rcpt["Action"] == "delayed" and per_rcpt["Status"] == "4.4.1"
    assert per_rcpt["Diagnostic-Code"] == "X-Geomail; connection refused"
    assert per_rcpt["Will-Retry-Until"]
    assert "Original-Recipient" not in per_rcpt and "Remote-MTA" not in per_rcpt


def test_several_recipients_and_utf8_address() -> None:
    """RFC 3464 2.3 (one block per recipient) and RFC 6533 3 (utf-8 address type)."""
    msg = parse(make(DSNRecipient("bob@example.org", "failed", "5.1.1"),
                     DSNRecipient("jösé@example.org", "failed", "5.2.2")))
    blocks = msg.get_payload()[1].get_payload()
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; bob@example.org", "utf-8; jösé@example.org"]


def test_original_headers_cut() -> None:
    """RFC 3464 2 / RFC 6522 3: only the header section of the original is returned."""
    assert original_headers(HEADERS + b"\nsecret body\n") == HEADERS
    assert original_headers(b"\nbody only\n") == b""
    assert len(original_headers(b"X: " + b"y" * 100_000)) == 64 * 1024

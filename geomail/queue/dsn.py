"""Delivery status notifications: RFC 3464 multipart/report messages built with ``email``;
failures, delays and (RFC 3461 6.2) successes, with ENVID, ORCPT and RET honoured."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid

from geomail.proto.client import printable
from geomail.units import KiB

MAX_HEADER_BYTES = 64 * KiB  # of the original message, returned in text/rfc822-headers
SUCCESS_ACTIONS = ("delivered", "relayed")  # RFC 3464 2.3.3


@dataclass(frozen=True, slots=True)
class DSNRecipient:
    """One recipient's entry in a report (RFC 3464 2.3)."""

    final_recipient: str
    action: str  # "failed", "delayed", or for success DSNs "delivered" or "relayed"
    status: str  # RFC 3463 "5.1.1"
    original_recipient: str | None = None
    remote_mta: str | None = None  # host name of the server that answered
    diagnostic: str | None = None  # the server's reply "550 5.1.1 No such user", or our reason
    diagnostic_is_smtp: bool = True  # the diagnostic is an SMTP reply (else our own text)
    last_attempt: float | None = None
    will_retry_until: float | None = None
    orcpt: str | None = None  # RCPT ORCPT= decoded, "rfc822;addr" (RFC 3461 4.2); wins


def original_headers(head: bytes) -> bytes:
    """The header section of a message whose first bytes are ``head`` (LF line endings)."""
    head = head[:MAX_HEADER_BYTES]
    if head.startswith(b"\n"):
        return b""
    end = head.find(b"\n\n")
    return head[: end + 1] if end >= 0 else head


def formatdate(timestamp: float) -> str:
    """An RFC 5322 date-time in UTC (``+0000``, a known zone, unlike ``-0000``)."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _type_of(address: str) -> str:
    """``rfc822; addr``, or ``utf-8; addr`` for an internationalised address (RFC 6533)."""
    return f"{'rfc822' if address.isascii() else 'utf-8'}; {address}"


def _mta_name(remote_mta: str) -> str:
    return printable(remote_mta.split(" [", 1)[0])


def build_dsn(*, reporting_mta: str, sender: str, recipients: Sequence[DSNRecipient],
              headers: bytes, queue_id: str, arrival: float, now: float,
              postmaster: str | None = None, envid: str | None = None,
              message: bytes | None = None) -> bytes:
    """The DSN for ``recipients`` of queue item ``queue_id``, addressed to the original envelope
    ``sender``; LF line endings, ready to queue with the null sender ``<>``.

    All recipients share one kind: failed, delayed, or success (delivered/relayed). ``envid``
    becomes ``Original-Envelope-Id`` (RFC 3464 2.2.1); ``message`` (RET=FULL, RFC 3461 4.3)
    is returned whole as message/rfc822, else ``headers`` as text/rfc822-headers.
    """
    delayed = all(r.action == "delayed" for r in recipients)
    success = all(r.action in SUCCESS_ACTIONS for r in recipients)
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = sender
    report["Subject"] = ("Delayed Mail (still being retried)" if delayed
                         else "Successful Mail Delivery Report" if success
                         else "Undelivered Mail Returned to Sender")
    report["Date"] = formatdate(now)
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: do not answer this automatically
    report.preamble = "This is a MIME-encapsulated message."

    report.attach(_text(_human(reporting_mta, recipients, delayed, postmaster, success,
                               message is not None)))

    status = MIMEBase("message", "delivery-status")
    per_message = Message()
    if envid is not None:
        per_message["Original-Envelope-Id"] = printable(envid)
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["X-Geomail-Queue-ID"] = queue_id
    per_message["Arrival-Date"] = formatdate(arrival)
    blocks = [per_message]
    for rcpt in recipients:
        block = Message()
        if rcpt.orcpt:
            kind, _, address = rcpt.orcpt.partition(";")
            block["Original-Recipient"] = f"{kind}; {address}"
        elif rcpt.original_recipient:
            block["Original-Recipient"] = _type_of(rcpt.original_recipient)
        block["Final-Recipient"] = _type_of(rcpt.final_recipient)
        block["Action"] = rcpt.action
        block["Status"] = rcpt.status
        if rcpt.remote_mta:
            block["Remote-MTA"] = f"dns; {_mta_name(rcpt.remote_mta)}"
        if rcpt.diagnostic:
            kind = "smtp" if rcpt.diagnostic_is_smtp else "X-Geomail"
            block["Diagnostic-Code"] = f"{kind}; {printable(rcpt.diagnostic)}"
        if rcpt.last_attempt is not None:
            block["Last-Attempt-Date"] = formatdate(rcpt.last_attempt)
        if rcpt.will_retry_until is not None:
            block["Will-Retry-Until"] = formatdate(rcpt.will_retry_until)
        blocks.append(block)
    status.set_payload(blocks)  # type: ignore[arg-type]  # typeshed: list is invariant
    report.attach(status)

    if message is not None:
        whole = MIMEBase("message", "rfc822")
        # kept byte for byte: the generator writes a str payload of a message/* part as is
        whole.set_payload(message.decode("ascii", "surrogateescape"))
        whole["Content-Transfer-Encoding"] = "7bit" if message.isascii() else "8bit"
        report.attach(whole)
    else:
        text = headers.decode("utf-8", "replace")
        original = MIMEText(text, "rfc822-headers", "us-ascii" if text.isascii() else "utf-8")
        report.attach(original)

    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=policy.compat32.clone(linesep="\n")).flatten(
        report)
    return out.getvalue()


def _text(body: str) -> MIMEText:
    part = MIMEText(body, "plain", "us-ascii" if body.isascii() else "utf-8")
    part["Content-Description"] = "Notification"
    return part


def _human(reporting_mta: str, recipients: Sequence[DSNRecipient], delayed: bool,
           postmaster: str | None, success: bool = False, full: bool = False) -> str:
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if success:
        lines += ["Your message was successfully delivered to the destinations below.",
                  "If a destination says \"relayed\", it was passed on to a system that",
                  "does not report delivery; you may get no further notice.", ""]
    elif delayed:
        lines += ["Your message could not be delivered yet to the recipients below.",
                  "It is still in the queue and will be tried again; you do not need to",
                  "send it again.", ""]
    else:
        lines += ["I'm sorry to have to inform you that your message could not be",
                  "delivered to one or more recipients. It is attached below"
                  + ("." if full else " (headers only)."),
                  ""]
    if postmaster:
        lines += [f"For further assistance, please contact <{postmaster}>.", ""]
    for rcpt in recipients:
        why = rcpt.action if success else printable(rcpt.diagnostic or rcpt.status)
        where = f" (from {_mta_name(rcpt.remote_mta)})" if rcpt.remote_mta else ""
        lines.append(f"<{rcpt.final_recipient}>: {why}{where}")
        if rcpt.will_retry_until is not None:
            lines.append(f"    will be retried until {formatdate(rcpt.will_retry_until)}")
    return "\n".join(lines) + "\n"

"""Header fields geomail adds (geomail/headers.py): Received, Return-Path, Delivered-To."""

from __future__ import annotations

import email.utils
import re

from geomail.headers import delivered_to, received, return_path

NOW = 1_700_000_000.0


def fields(**overrides) -> dict:
    args = dict(helo="client.example.org", client_ip="192.0.2.7", hostname="mx.example.com",
                protocol="ESMTPS", msgid="abc123", tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
                recipient="alice@example.com", now=NOW)
    args.update(overrides)
    return args


def test_received():
    """A folded Received field with from, by, with, id, for and the date (RFC 5321 4.4,
    RFC 5322 3.6.7), LF line endings as stored."""
    text = received(**fields()).decode()
    lines = text.split("\n")
    assert lines[:4] == [
        "Received: from client.example.org ([192.0.2.7])",
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)",
        "\tby mx.example.com (geomail) with ESMTPS id abc123",
        lines[3],
    ]
    assert lines[4:] == [""]
    match = re.fullmatch(r"\tfor <alice@example\.com>; (.+)", lines[3])
    assert match
    assert email.utils.parsedate_to_datetime(match.group(1)).timestamp() == NOW
    assert "\r" not in text


def test_received_without_tls_or_recipient():
    """Without TLS there is no comment; with several recipients no ``for`` clause (RFC 5321
    4.4: 'for' names one recipient)."""
    text = received(**fields(tls=None, recipient=None)).decode()
    lines = text.split("\n")
    assert lines[0] == "Received: from client.example.org ([192.0.2.7])"
    assert lines[1] == "\tby mx.example.com (geomail) with ESMTPS id abc123;"
    assert lines[2].startswith("\t") and email.utils.parsedate_to_datetime(lines[2][1:])
    assert lines[3:] == [""]


def test_received_without_helo_uses_the_ip():
    assert received(**fields(helo=None)).startswith(b"Received: from 192.0.2.7 ([192.0.2.7])")


def test_received_cleans_client_text():
    """What the client chose (HELO name, recipient, TLS description) cannot break the field:
    no CR/LF, no spaces in the HELO word, printable ASCII, bounded length (RFC 5322 2.2)."""
    text = received(**fields(helo="evil\r\nX-Injected: 1 " + "a" * 500,
                             recipient="a@b\nX-Bad: 2", tls="TLS\nX-Evil: 3")).decode()
    lines = text.split("\n")
    assert len(lines) == 5
    assert not any(line.startswith("X-") for line in lines)
    assert lines[0].startswith("Received: from evil??X-Injected:?1?aaaa")
    assert len(lines[0]) < 140
    assert text.isascii()


def test_received_non_ascii_helo():
    text = received(**fields(helo="café.example")).decode()
    assert text.startswith("Received: from caf?.example ")


def test_return_path_and_delivered_to():
    """Return-Path records the envelope sender, <> for bounces (RFC 5321 4.4)."""
    assert return_path("bob@example.org") == b"Return-Path: <bob@example.org>\n"
    assert return_path("") == b"Return-Path: <>\n"
    assert delivered_to("alice@example.com") == b"Delivered-To: alice@example.com\n"

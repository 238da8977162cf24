"""DNS list query names and answer codes (geomail/checks/dnslists.py, RFC 5782)."""

from __future__ import annotations

import pytest

from geomail.checks.dnslists import _listed, query_name


def test_ipv4_query_name_reverses_octets():
    """RFC 5782 2.1: 192.0.2.99 is asked as 99.2.0.192.<zone>; an IPv4-mapped IPv6 client
    (a dual-stack listener) is asked as its IPv4 address."""
    assert query_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.99", "bl.test") == "99.2.0.192.bl.test"


def test_ipv6_query_name_reverses_nibbles():
    """RFC 5782 2.4: the 32 nibbles of the address, reversed, as in ip6.arpa (its example)."""
    assert query_name("2001:db8:1:2:3:4:567:89ab", "ugly.example.com") == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com")


@pytest.mark.parametrize(("code", "codes", "listed"), [
    ("127.0.0.2", (), True),
    ("127.0.0.10", (), True),
    ("127.255.255.254", (), False),  # Spamhaus: "query through a public resolver"
    ("127.255.255.252", (), False),  # typing error in the zone name
    ("10.0.0.1", (), False),  # outside 127/8: not a listing (RFC 5782 2.3)
    ("127.0.0.4", ("127.0.0.2", "127.0.0.3"), False),
    ("127.0.0.3", ("127.0.0.2", "127.0.0.3"), True),
])
def test_answer_codes(code, codes, listed):
    """RFC 5782 2.3 and issue 12 item 7: an answer lists the client when it is one of the
    zone's configured ``codes``; with none configured, any 127.0.0.0/8 answer except
    127.255.255.0/24, the range the lists use for error answers."""
    assert _listed(code, codes) is listed

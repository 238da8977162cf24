"""HopCounter (geomail/proto/hopcount.py): Received fields of the header section, streamed."""

from __future__ import annotations

import pytest

from geomail.proto.hopcount import HopCounter, count_received
from tests.support.splits import ways

RECEIVED = b"Received: from a.example by b.example; Sun, 6 Dec 2026 03:00:00 +0000\n"


def counted(data: bytes) -> int:
    """The count, which must be the same however ``data`` is split."""
    results = set()
    for _name, parts in ways(data):
        counter = HopCounter()
        for part in parts:
            counter.feed(part)
        counter.finish()
        results.add(counter.count)
    assert len(results) == 1, results
    return results.pop()


@pytest.mark.parametrize(("message", "count"), [
    (b"Subject: none\n\nbody\n", 0),
    (RECEIVED * 3 + b"Subject: x\n\nbody\n", 3),
    (b"received: x\nRECEIVED: y\nReceived : obsolete form (RFC 5322 4.5.3)\n\n", 3),
    (RECEIVED.replace(b"\n", b"\r\n") * 2 + b"\r\n", 2),  # CRLF endings too
    (b"Received: from a\n\tby b; folded (RFC 5322 2.2.3)\nReceived: x\n\n", 2),
    (b"X-Note: a\n Received: in a continuation line\n\n", 0),
    (b"Subject: x\n\n" + RECEIVED * 5, 0),  # in the body: not a hop
    (RECEIVED + b"this line is no header field\n" + RECEIVED, 1),  # the body began
    (b"Received-SPF: pass\nX-Received: x\n\n", 0),  # other fields
    (RECEIVED * 2, 2),  # no body at all
    (b"Received: no final newline", 1),
    (b"X-Long: " + b"a" * 5000 + b"\nReceived: x\n\n", 1),  # a long line costs nothing
])
def test_count(message, count):
    """Only ``Received:`` fields of the header section count (RFC 5321 6.3, Postfix's
    hopcount_limit), case-insensitively, folded or not, however the content is split."""
    assert counted(message) == count


def test_done_after_the_header_section():
    """Once the empty line has passed, the counter looks at nothing more."""
    counter = HopCounter()
    counter.feed(RECEIVED + b"\n")
    assert counter.done and counter.count == 1
    counter.feed(RECEIVED * 10)
    assert counter.count == 1


def test_count_received_on_a_whole_message():
    """The helper for the queue side: a whole message in one call."""
    assert count_received(RECEIVED * 51 + b"\nbody\n") == 51

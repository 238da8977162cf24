"""queue.item: per-recipient delivery state and its JSON form on disk (the queue's RFC 5321
4.5.4.1 retry bookkeeping)."""

from __future__ import annotations

import json

import pytest

from geomail.ids import new_id
from geomail.queue.item import (
    DELIVERED,
    FAILED,
    PENDING,
    QueueItem,
    Recipient,
    valid_id,
)


def sample() -> QueueItem:
    return QueueItem(
        id=new_id(1_700_000_000.0), sender="alice@example.com",
        recipients=[Recipient("bob@example.org", original="team@example.com"),
                    Recipient("carol@example.net", status=DELIVERED, attempts=1),
                    Recipient("dan@example.net", status=FAILED, last_error="550 5.1.1 no",
                              code=550, enhanced="5.1.1")],
        created=1_700_000_000.0, next_attempt=1_700_000_060.0, attempts=1, size=100,
        crlf_size=104, eight_bit=True)


def test_round_trip() -> None:
    """RFC 5321 4.5.4.1: every field the retry logic needs survives a write and a read."""
    item = sample()
    again = QueueItem.from_json(item.to_json())
    assert again == item
    assert json.loads(item.to_json())["recipients"][0]["original"] == "team@example.com"


def test_state_queries() -> None:
    """RFC 5321 4.5.4.1: pending recipients are retried; delivered and reported ones are done."""
    item = sample()
    assert [r.address for r in item.pending] == ["bob@example.org"]
    assert not item.done
    item.recipients[0].status = DELIVERED
    assert not item.done  # dan failed but the DSN is not queued yet
    item.recipients[2].notified = True
    assert item.done
    assert item.recipient("dan@example.net") is item.recipients[2]
    assert item.recipient("nobody@x") is None


def test_unknown_fields_are_kept() -> None:
    """RFC 5321 4.5.4.1: a newer writer's extra fields survive a rewrite by this version."""
    data = sample().to_dict()
    data["future"] = {"x": 1}
    item = QueueItem.from_dict(data)
    assert item.to_dict()["future"] == {"x": 1}


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(version=2),
    lambda d: d.update(id="../../etc/passwd"),
    lambda d: d.pop("sender"),
    lambda d: d.update(kind="weird"),
    lambda d: d["recipients"].append({"address": "x@y", "status": "lost"}),
    lambda d: d["recipients"].append({"no": "address"}),
])
def test_rejects_malformed(mutate) -> None:
    """RFC 5321 4.5.4.1: a damaged item is refused rather than half-trusted."""
    data = sample().to_dict()
    mutate(data)
    with pytest.raises(ValueError):
        QueueItem.from_dict(data)
    with pytest.raises(ValueError):
        QueueItem.from_json(b"{not json")


def test_ids() -> None:
    """RFC 5321 4.4 (queue ids in trace fields): ids sort by age and are safe file names."""
    first, second = new_id(1_700_000_000.0), new_id(1_700_000_001.0)
    assert first < second and valid_id(first) and valid_id(second)
    assert not valid_id("../x") and not valid_id("") and not valid_id("ABC123456789")
    assert Recipient("a@b").status == PENDING


def test_tls_report_kind_round_trips() -> None:
    """RFC 8460 5.3: a queued TLS report keeps its kind on disk (the courier then sends it
    despite TLS failures); items written before it have the default kind."""
    item = sample()
    item.sender, item.kind = "", "tls-report"
    again = QueueItem.from_json(item.to_json())
    assert again.kind == "tls-report" and again == item
    data = json.loads(sample().to_json())
    del data["kind"]
    assert QueueItem.from_dict(data).kind == "message"

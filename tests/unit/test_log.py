"""Log lines (geomail/log.py): key=value text and JSON, one line per event (DESIGN rule 6)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from geomail import log
from geomail.log import JSONFormatter, KeyValueFormatter, event, render_value

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def capture():
    """A logger whose records are formatted by the formatter under test into a buffer."""
    def make(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger = logging.getLogger(f"geomail.test.{id(stream)}")
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        return logger, stream

    return make


@pytest.mark.parametrize(("value", "rendered"), [
    ("plain", "plain"),
    (42, "42"),
    (None, "None"),
    ("<alice@example.com>", "<alice@example.com>"),
    ("", '""'),
    ("two words", '"two words"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("a=b", '"a=b"'),
    ("back\\slash", '"back\\\\slash"'),
    ("line\nbreak", '"line\\nbreak"'),
    ("cr\rtab\t", '"cr\\rtab\\t"'),
    ("zoë", "zoë"),
    ("o'brien", '"o\'brien"'),
    ("esc\x1b[31m", '"esc\\x1b[31m"'),
    ("c1\x9b2J", '"c1\\x9b2J"'),
    ("line\u2028sep", '"line\\u2028sep"'),
    ("bidi\u202egnp.exe", '"bidi\\u202egnp.exe"'),
    ("nb\u00a0sp", '"nb\\xa0sp"'),
    ("bad\udcff", '"bad\\udcff"'),
])
def test_render_value(value, rendered):
    """Values are quoted when they hold spaces, quotes, '=' or are empty; newlines are escaped
    so that one event stays one line (log injection)."""
    assert render_value(value) == rendered


def test_key_value_event(capture):
    """``<ts> LEVEL event k=v ...``; a trailing underscore lets ``from_`` be a key; None fields
    are left out."""
    logger, stream = capture(KeyValueFormatter())
    event(logger, logging.INFO, "accepted", id="abc123", from_="<a@example.org>", to="b c",
          size=120, tls=None)
    line = stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert re.fullmatch(
        TIMESTAMP + r' INFO accepted id=abc123 from=<a@example.org> to="b c" size=120\n', line)


def test_key_value_injection_stays_on_one_line(capture):
    """Client-supplied text cannot forge a second log line (fail2ban reads these lines)."""
    logger, stream = capture(KeyValueFormatter())
    event(logger, logging.WARNING, "auth-failed", user="x\n2026-01-01T00:00:00.000Z INFO fake")
    assert stream.getvalue().count("\n") == 1


def test_key_value_plain_record(capture):
    """A record that is not an event keeps its (conventionally key=value) message."""
    logger, stream = capture(KeyValueFormatter())
    logger.warning("disk=%s path=%s", "full", "/var")
    assert re.fullmatch(TIMESTAMP + " WARNING disk=full path=/var\n", stream.getvalue())


def test_key_value_exception(capture):
    """A traceback follows its event, every line behind '  | ': an exception message with a
    newline cannot start a line that looks like an event (docs/logging.md)."""
    logger, stream = capture(KeyValueFormatter())
    try:
        raise RuntimeError("boom\n2026-01-01T00:00:00.000Z WARNING auth-failed client=6.6.6.6")
    except RuntimeError:
        event(logger, logging.ERROR, "bug", exc_info=True, session="s1")
    text = stream.getvalue()
    assert re.match(TIMESTAMP + " ERROR bug session=s1\n  \\| Traceback", text)
    lines = text.splitlines()
    assert all(line.startswith("  | ") for line in lines[1:])
    assert "  | RuntimeError: boom" in lines and "  | 2026-01-01T00:00:00.000Z WARNING" in text


def test_json_event(capture):
    """One JSON object per line; numbers and booleans stay typed, the rest are strings."""
    logger, stream = capture(JSONFormatter())
    event(logger, logging.INFO, "delivered", id="q1", from_="<>", size=10, ok=True, delay=1.5,
          to=["a", "b"], skipped=None)
    line = stream.getvalue()
    assert line.count("\n") == 1
    data = json.loads(line)
    assert re.fullmatch(TIMESTAMP, data.pop("ts"))
    assert data == {"level": "info", "event": "delivered", "id": "q1", "from": "<>", "size": 10,
                    "ok": True, "delay": 1.5, "to": "['a', 'b']"}


def test_json_plain_record_and_unicode(capture):
    logger, stream = capture(JSONFormatter())
    logger.error("zoë\nnext")
    line = stream.getvalue()
    assert line.count("\n") == 1 and "zoë" in line
    data = json.loads(line)
    assert (data["msg"], data["logger"], data["level"]) == ("zoë\nnext", logger.name, "error")


def test_event_respects_the_level(capture):
    logger, stream = capture(KeyValueFormatter())
    logger.setLevel(logging.INFO)
    event(logger, logging.DEBUG, "transcript", line="EHLO x")
    assert stream.getvalue() == ""


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(("fmt", "check"), [
    ("text", lambda line: " INFO started version=1" in line),
    ("json", lambda line: json.loads(line)["event"] == "started"),
])
def test_setup(restore_root, fmt, check):
    """setup() sends every logger's lines to one stream in the chosen format, at the level."""
    stream = io.StringIO()
    log.setup("info", fmt, stream)
    root = logging.getLogger()
    assert len(root.handlers) == 1 and root.level == logging.INFO
    event(logging.getLogger("geomail.x"), logging.INFO, "started", version=1)
    event(logging.getLogger("geomail.x"), logging.DEBUG, "hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and check(lines[0])


def test_setup_replaces_handlers(restore_root):
    """Calling setup() again does not duplicate lines."""
    stream = io.StringIO()
    log.setup("debug", "text", stream)
    log.setup("debug", "text", stream)
    logging.getLogger("geomail.y").debug("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_event_record_has_every_attribute_of_a_log_record():
    """``EventRecord`` skips ``LogRecord.__init__`` (its caller, thread and process lookups):
    it must still set every attribute a real record has, so that any handler or formatter
    (logging's own ``%(...)s`` fields included) works on it in this Python."""
    import logging as stdlib_logging

    from geomail.log import EventRecord

    real = stdlib_logging.LogRecord("x", stdlib_logging.INFO, "", 0, "msg", (), None)
    lean = EventRecord("x", stdlib_logging.INFO, "msg", None)
    missing = sorted(set(vars(real)) - set(vars(lean)))
    assert missing == []
    formatted = stdlib_logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(module)s %(lineno)d %(thread)s %(message)s"
    ).format(lean)
    assert formatted.endswith(" msg")

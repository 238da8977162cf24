"""Logging set-up: one line per event on stderr, ``key=value`` text (default) or JSON."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from typing import Any

EVENT_FIELDS = "geomail_fields"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape_control(text: str) -> str:
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
        m.group(), f"\\x{ord(m.group()):02x}"), text)


_NEEDS_QUOTES = re.compile(r'[ "=\\\x00-\x1f\x7f]')


def render_value(value: object) -> str:
    """A value as it appears after ``key=``: quoted when it has spaces, quotes or is empty;
    control characters escaped, so no value can start a fake log line."""
    text = value if isinstance(value, str) else str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        escaped = _escape_control(text.replace("\\", "\\\\").replace('"', '\\"'))
        return f'"{escaped}"'
    return text


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log the event ``name`` with its fields (rendered as key=value, or as JSON keys)."""
    if logger.isEnabledFor(level):
        clean = {k.rstrip("_"): v for k, v in fields.items() if v is not None}
        logger.log(level, name, extra={EVENT_FIELDS: clean})


_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    global _second
    whole = int(record.created)
    if _second[0] != whole:  # strftime once per second, not once per line
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(record.msecs):03d}Z"


class KeyValueFormatter(logging.Formatter):
    """``2026-11-29T13:39:19.123Z INFO accepted id=... from=<...>``"""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, EVENT_FIELDS, None)
        if fields is not None:
            text = " ".join([record.getMessage()] +
                            [f"{k}={render_value(v)}" for k, v in fields.items()])
        else:  # plain records are key=value text by convention; keep them on one line
            text = _escape_control(record.getMessage())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{_timestamp(record)} {record.levelname} {text}"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event (or msg) and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, EVENT_FIELDS, None)
        data: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower()}
        if fields is not None:
            data["event"] = record.getMessage()
            for key, val in fields.items():
                data.setdefault(key, val if isinstance(val, int | float | bool) else str(val))
        else:
            data["msg"] = record.getMessage()
            data["logger"] = record.name
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class BatchingHandler(logging.StreamHandler):
    """Writes log lines in batches: under load a busy server logs several lines per message,
    and one write(2) per line would cost as much as the mail itself. The lines logged during
    one turn of the event loop go out together at its end; warnings and errors at once."""

    def __init__(self, stream: Any) -> None:
        super().__init__(io.TextIOWrapper(io.BufferedWriter(io.FileIO(stream.fileno(), "w",
                                                                      closefd=False), 1 << 16),
                                          encoding="utf-8", errors="replace"))
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
        elif not self._scheduled:
            import gevent

            self._scheduled = True
            gevent.get_hub().loop.run_callback(self._flush_batch)

    def _flush_batch(self) -> None:
        self._scheduled = False
        self.flush()


def setup(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Send every log line to ``stream`` (stderr) in the chosen format; call once, from cli."""
    target = stream or sys.stderr
    try:
        target.fileno()
        handler: logging.Handler = BatchingHandler(target)
    except (AttributeError, OSError, ValueError):  # not a real file (tests): plain writes
        handler = logging.StreamHandler(target)
    handler.setFormatter(JSONFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Records need no caller, thread or process: computing them (a stack walk, a fake thread
    # object per greenlet under gevent) cost more than the rest of a log line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False

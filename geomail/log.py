"""Logging set-up: one line per event on stderr, ``key=value`` text (default) or JSON."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from typing import Any, TextIO

EVENT_FIELDS = "geomail_fields"
EVENT_NAME = "geomail_event"


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape_control(text: str) -> str:
    """Every character that is not printable (C0 and C1 controls, ESC, DEL, line and paragraph
    separators, bidi and other format characters, lone surrogates) as a backslash escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


# Quoted: what would split or fake a field (space, quotes, '='), and the backslash that starts
# an escape; the line then splits like POSIX shell words (``shlex.split``) into key=value.
_NEEDS_QUOTES = re.compile(r"""[ "'=\\]""")


def render_value(value: object) -> str:
    """A value as it appears after ``key=``: quoted when it has spaces, quotes, '=' or a
    backslash, is empty, or holds characters that are not printable (escaped, so no value can
    start a fake log line or send a terminal escape sequence); printable UTF-8 stays as is."""
    text = value if isinstance(value, str) else str(value)
    if text == "" or _NEEDS_QUOTES.search(text) or not text.isprintable():
        escaped = _escape_control(text.replace("\\", "\\\\").replace('"', '\\"'))
        return f'"{escaped}"'
    return text


def event(logger: logging.Logger, level: int, name: str, /, *, exc_info: bool = False,
          **fields: object) -> None:
    """Log the event ``name`` with its fields (rendered as key=value, or as JSON keys);
    ``exc_info``: add the exception being handled (a traceback, for bugs)."""
    if logger.isEnabledFor(level):
        clean = {k.rstrip("_"): v for k, v in fields.items() if v is not None}
        # The message is the whole key=value text, so any handler (pytest's, syslog's) shows
        # the fields; the JSON formatter takes them from the record.
        text = " ".join([name, *(f"{k}={render_value(v)}" for k, v in clean.items())])
        # Made here rather than by logger.log, which walks the stack to find the caller: a
        # file and line nobody prints, and without patching logging's private ``_srcfile``.
        record = EventRecord(logger.name, level, text, sys.exc_info() if exc_info else None)
        record.geomail_fields = clean
        record.geomail_event = name
        logger.handle(record)


class EventRecord(logging.LogRecord):
    """A log record without what no geomail line prints (caller's file and line, thread,
    process): a plain LogRecord looks them up on every line, a few microseconds each, and a
    busy server logs several lines per message. Handlers see the attributes they expect."""

    geomail_fields: dict[str, object]
    geomail_event: str

    def __init__(self, name: str, level: int, msg: str, exc_info: Any) -> None:
        # Not super().__init__: that is the cost this class avoids.
        now = time.time()
        self.name = name
        self.msg = msg
        self.args = ()
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.pathname = self.filename = self.module = ""
        self.lineno = 0
        self.funcName = ""
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = None
        self.created = now
        self.msecs = (now - int(now)) * 1000
        self.relativeCreated = 0.0
        self.thread = self.threadName = None
        self.process = self.processName = None
        self.taskName = None


class _Timestamps(logging.Formatter):
    """A formatter that renders ``record.created`` as UTC with milliseconds, calling
    strftime once per second, not once per line."""

    _second: tuple[int, str] = (-1, "")

    def timestamp(self, record: logging.LogRecord) -> str:
        whole = int(record.created)
        if self._second[0] != whole:
            self._second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"


class KeyValueFormatter(_Timestamps):
    """``2026-11-29T13:39:19.123Z INFO accepted id=... from=<...>``"""

    def format(self, record: logging.LogRecord) -> str:
        # An event's message is its rendered key=value text; other records are key=value
        # by convention, kept on one line.
        text = record.getMessage()
        if not hasattr(record, EVENT_FIELDS):
            text = _escape_control(text)
        if record.exc_info:
            text += _traceback(self.formatException(record.exc_info))
        return f"{self.timestamp(record)} {record.levelname} {text}"


def _traceback(text: str) -> str:
    """A traceback under its event, each line behind ``  | ``: an exception message holding a
    newline cannot make a line that looks like an event of its own."""
    return "".join(f"\n  | {_escape_control(line)}" for line in text.splitlines())


class JSONFormatter(_Timestamps):
    """One JSON object per line: ts, level, event (or msg) and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, EVENT_FIELDS, None)
        data: dict[str, Any] = {"ts": self.timestamp(record), "level": record.levelname.lower()}
        if fields is not None:
            data["event"] = getattr(record, EVENT_NAME, record.getMessage())
            for key, val in fields.items():
                data.setdefault(key, val if isinstance(val, int | float | bool) else str(val))
        else:
            data["msg"] = record.getMessage()
            data["logger"] = record.name
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class BatchingHandler(logging.StreamHandler[TextIO]):
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

"""Every log line is an event with fields (docs/logging.md), and docs/logging.md lists them all:
a standing guard over geomail's source, read with ``ast``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import geomail

ROOT = Path(geomail.__file__).resolve().parents[1]  # the checkout whose geomail is imported
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted((ROOT / "geomail").rglob("*.py"))]


def _events() -> dict[str, set[str]]:
    """Event name -> the field names the code logs with it (``event(logger, level, NAME,
    **fields)``, or a record carrying ``geomail_event`` as proto/ must write it)."""
    found: dict[str, set[str]] = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or path.name == "log.py":
                continue
            fields = {k.arg.rstrip("_") for k in node.keywords if k.arg and k.arg != "exc_info"}
            if isinstance(node.func, ast.Name) and node.func.id == "event" and len(node.args) > 2:
                name = node.args[2]
                names = ([name.body, name.orelse] if isinstance(name, ast.IfExp) else [name])
                for item in names:
                    assert isinstance(item, ast.Constant), ast.dump(node)
                    found.setdefault(item.value, set()).update(fields)
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    extra = {k.value: v for k, v in zip(keyword.value.keys, keyword.value.values,
                                                        strict=True) if isinstance(k, ast.Constant)}
                    name = extra.get("geomail_event")
                    assert isinstance(name, ast.Constant), ast.dump(node)
                    found.setdefault(name.value, set())
    return found


def test_no_log_call_formats_its_own_line() -> None:
    """Every log call in geomail/ goes through ``geomail.log.event`` (fields
    quoted and escaped, the same fields in JSON), never ``log.info("x=%s", value)``: such a
    line prints what a client or a remote server sent as it is. The one exception, proto/ (it
    may not import geomail.log), hands the fields over in ``extra``."""
    offenders = []
    for path, tree in _sources():
        if path.name == "log.py":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in {"log", "logger", "logging", "transcript"}
                    and not any(k.arg == "extra" for k in node.keywords)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def _documented() -> dict[str, set[str]]:
    """docs/logging.md's event table: event name -> the fields its row lists."""
    text = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    table = text[text.index("## Events"):text.index("## Metrics")]
    rows: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        fields = set(re.findall(r"[a-z_]+", " ".join(re.findall(r"`([^`]*)`", cells[2]))))
        for name in re.findall(r"`([a-z0-9-]+)`", cells[0]):
            rows.setdefault(name, set()).update(fields)
    return rows


def test_docs_list_every_event_and_its_fields() -> None:
    """docs/logging.md is the operator's catalogue (README, DESIGN rule 6): every event the
    code logs has a row naming each of its fields, and every row is an event the code logs."""
    events, documented = _events(), _documented()
    assert sorted(set(events) - set(documented)) == [], "events missing from docs/logging.md"
    assert sorted(set(documented) - set(events)) == [], "documented events nothing logs"
    missing = {name: sorted(fields - documented[name]) for name, fields in events.items()
               if fields - documented[name]}
    assert missing == {}, "fields missing from docs/logging.md"


def test_no_field_takes_a_json_key_of_the_line() -> None:
    """``log.format: json`` carries the same fields as the text: a field
    named like the line's own keys (ts, level, event, msg, logger, exception) would be lost."""
    reserved = {"ts", "level", "event", "msg", "logger", "exception"}
    assert {name: sorted(fields & reserved) for name, fields in _events().items()
            if fields & reserved} == {}

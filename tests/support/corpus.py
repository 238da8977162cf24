"""Real conversations, for the fuzz tests to start from: what the client says in the dialog tests.

The corpus is read from the test modules' source (``ast``, nothing imported or run), so every
conversation a test adds joins the fuzzers' seeds without being copied:

- a unit test's ``converse(data, setup=...)`` gives ``setup + data``;
- an integration test gives everything its client sends, in order: ``cmd``/``line``/``multi``
  lines, raw ``send`` bytes, the ``C:`` lines of a ``converse`` script, ``ehlo()``,
  ``starttls()`` and (POP3) ``login()``.

Only literal arguments are taken, and the module's (or the support module's) constants they
name; an argument built at run time (a parameter, an f-string of a loop variable) is left out.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from tests.support import pop3_session, smtp_session

TESTS = Path(__file__).resolve().parent.parent
CRLF = b"\r\n"

SMTP_SOURCES = ("unit/test_proto_smtp.py", "integration/test_smtp_conversation.py",
                "integration/test_submission.py", "integration/test_smtp_limits.py")
POP3_SOURCES = ("unit/test_proto_pop3.py", "integration/test_pop3_conversation.py")


class _Unknown(Exception):
    """The expression cannot be evaluated statically."""


def _constants(module: ModuleType) -> dict[str, object]:
    return {k: v for k, v in vars(module).items() if isinstance(v, str | bytes | int)}


def _evaluate(node: ast.expr, names: dict[str, object]) -> object:
    """A literal, a known name, ``+``/``*``/``%`` of those, ``"...".encode()``, or an f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes | int):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult | ast.Mod):
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        if isinstance(node.op, ast.Mod):
            raise _Unknown
        try:
            return left + right if isinstance(node.op, ast.Add) else left * right  # type: ignore[operator]
        except TypeError:
            raise _Unknown from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "encode" and not node.args and not node.keywords:
        text = _evaluate(node.func.value, names)
        if isinstance(text, str):
            return text.encode()
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                if value.format_spec is not None or value.conversion != -1:
                    raise _Unknown
                parts.append(str(_evaluate(value.value, names)))
            else:
                parts.append(str(_evaluate(value, names)))
        return "".join(parts)
    raise _Unknown


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise _Unknown


def _module_names(tree: ast.Module, base: dict[str, object]) -> dict[str, object]:
    names = dict(base)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name):
            with contextlib.suppress(_Unknown):
                names[stmt.targets[0].id] = _evaluate(stmt.value, names)
    return names


def _client_bytes(call: ast.Call, names: dict[str, object], login: bytes) -> bytes:
    """What one client-side call of an integration test sends."""
    assert isinstance(call.func, ast.Attribute)
    method, args = call.func.attr, call.args
    if method in ("cmd", "line", "multi") and args:
        return _as_bytes(_evaluate(args[0], names)) + CRLF
    if method == "send" and len(args) == 1:
        return _as_bytes(_evaluate(args[0], names))
    if method == "converse" and len(args) == 1:
        script = _evaluate(args[0], names)
        if not isinstance(script, str):
            raise _Unknown
        lines = (line.strip() for line in textwrap.dedent(script).splitlines())
        return b"".join(line[3:].encode() + CRLF for line in lines if line.startswith("C: "))
    if method == "ehlo" and not call.keywords:
        name = _evaluate(args[0], names) if args else "client.example"
        return b"EHLO " + _as_bytes(name) + CRLF
    if method == "starttls":
        return b"STARTTLS" + CRLF
    if method == "login" and not args and login:
        return login
    raise _Unknown


def _calls(node: ast.AST) -> Iterator[ast.Call]:
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
    yield from sorted(calls, key=lambda n: (n.lineno, n.col_offset))


def _harvest(path: Path, base: dict[str, object], login: bytes) -> Iterator[bytes]:
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError):
        return  # a test module being edited must not take the fuzzers down with it
    names = _module_names(tree, base)
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef) or not func.name.startswith("test"):
            continue
        script = b""
        for call in _calls(func):
            try:
                if isinstance(call.func, ast.Name) and call.func.id == "converse" and call.args:
                    setup = next((k.value for k in call.keywords if k.arg == "setup"), None)
                    data = _as_bytes(_evaluate(call.args[0], names))
                    yield (_as_bytes(_evaluate(setup, names)) if setup else b"") + data
                elif isinstance(call.func, ast.Attribute):
                    script += _client_bytes(call, names, login)
            except _Unknown:
                continue
        if script:
            yield script


@functools.cache
def smtp_conversations() -> tuple[bytes, ...]:
    """Every SMTP conversation of the SMTP dialog and session tests, deduplicated, sorted."""
    base = _constants(smtp_session)
    return tuple(sorted({c for source in SMTP_SOURCES
                         for c in _harvest(TESTS / source, base, b"") if c}))


@functools.cache
def pop3_conversations() -> tuple[bytes, ...]:
    """Every POP3 conversation of the POP3 dialog and session tests, deduplicated, sorted."""
    base = _constants(pop3_session)
    return tuple(sorted({c for source in POP3_SOURCES
                         for c in _harvest(TESTS / source, base, pop3_session.LOGIN) if c}))

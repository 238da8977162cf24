"""No module-level mutable state in geomail/ (no process-global state): what a running server
counts, caches or pools belongs to the App that owns it, so two Apps in one process do not
share or reset each other's state. The source is read with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "geomail"

# Calls whose result is an immutable value or a stateless object, allowed at module level.
IMMUTABLE_CALLS = {
    "logging.getLogger",  # loggers are the logging module's registry, configured by the CLI
    "re.compile", "TypeVar", "frozenset", "tuple", "bytes", "object", "namedtuple", "NewType",
    "Reply", "R.R421_TIMEOUT.with_text",  # frozen reply values
    "DeliveryError", "MessageAborted",  # exception instances used as constant values
    "Outcome",  # a frozen dataclass
    "CanonicalizationPolicy.from_c_value",  # dkimpy's immutable canonicalization pair
    "os.urandom(2).hex",  # a str
    "argon2.PasswordHasher",  # holds only its fixed parameters
    "struct.Struct",  # a compiled, immutable format
}

# Documented exceptions: (module, name) -> why it stays process-wide.
EXCEPTIONS = {
    ("geomail/ids.py", "_COUNTER"): "ids must be unique in the process, whatever App makes "
                                    "them; a counter per App would repeat ids across Apps",
    ("geomail/store/maildir.py", "_counter"): "the Maildir Q field counts this process's "
                                              "deliveries (P names the process)",
    ("geomail/store/maildir.py", "_random"): "a random generator for the R field; nothing "
                                             "reads state back from it",
}

CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*|__all__")
MUTATORS = {"append", "add", "update", "clear", "pop", "popitem", "setdefault", "remove",
            "extend", "insert", "discard", "sort", "reverse"}
LITERALS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text(), str(path))


def module_assignments(tree: ast.Module) -> Iterator[tuple[str, ast.expr | None, int]]:
    """(name, value, line) of every assignment in the module's own body (and its ifs/trys)."""
    body = list(tree.body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.If | ast.Try):
            body.extend([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
            continue
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    yield name.id, value, node.lineno


def call_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_no_global_statements() -> None:
    """A ``global`` statement rebinds module state at run time: none in geomail/."""
    found = [f"{path}:{node.lineno} global {', '.join(node.names)}"
             for path, tree in modules() for node in ast.walk(tree)
             if isinstance(node, ast.Global)]
    assert not found, "\n".join(found)


def test_module_level_values_are_constants() -> None:
    """Every module-level assignment in geomail/ is a constant: an immutable value, a call
    from IMMUTABLE_CALLS, or a dict/list/set table under an UPPER_CASE name that its module
    never changes; the process-wide generators in EXCEPTIONS say why they stay."""
    found = []
    for path, tree in modules():
        tables = set()
        for name, value, line in module_assignments(tree):
            if (path, name) in EXCEPTIONS or value is None:
                continue
            if isinstance(value, LITERALS):
                if CONSTANT.fullmatch(name):
                    tables.add(name)
                else:
                    found.append(f"{path}:{line} {name}: a mutable table under a variable name")
            elif isinstance(value, ast.Call) and call_name(value) not in IMMUTABLE_CALLS:
                found.append(f"{path}:{line} {name} = {call_name(value)}(...)")
        found += [f"{path}:{node.lineno} changes the module table {name}"
                  for node in ast.walk(tree) for name in _mutated(node) if name in tables]
    assert not found, "\n".join(found)


def test_no_stdlib_patches() -> None:
    """No assignment to another module's attribute (``logging._srcfile = None``,
    ``logging.logThreads = False``): a process-wide change every App and library would see."""
    found = []
    for path, tree in modules():
        imported = {alias.asname or alias.name.split(".")[0]
                    for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        for node in ast.walk(tree):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                       else [])
            found += [f"{path}:{node.lineno} {ast.unparse(target)}" for target in targets
                      if isinstance(target, ast.Attribute)
                      and isinstance(target.value, ast.Name) and target.value.id in imported]
    assert not found, "\n".join(found)


def test_the_guard_finds_what_it_forbids() -> None:
    """The checks above see each forbidden shape (so an empty result means something)."""
    tree = ast.parse("import logging\n_cache = {}\nCOUNTS = {}\n_pool = ThreadPool(2)\n"
                     "def f():\n    global _pool\n    COUNTS['a'] = 1\nlogging.x = 1\n")
    names = {name: value for name, value, _ in module_assignments(tree)}
    assert isinstance(names["_cache"], ast.Dict) and not CONSTANT.fullmatch("_cache")
    assert call_name(names["_pool"]) not in IMMUTABLE_CALLS  # type: ignore[arg-type]
    assert {name for node in ast.walk(tree) for name in _mutated(node)} == {"COUNTS"}
    assert any(isinstance(node, ast.Global) for node in ast.walk(tree))


def _mutated(node: ast.AST) -> Iterator[str]:
    """Names changed in place by ``node``: ``NAME[...] = ``, ``NAME[...] += ``, ``del
    NAME[...]``, ``NAME.append(...)`` and the other mutating methods."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign | ast.Delete):
        targets = node.targets
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    for target in targets:
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            yield target.value.id
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS and isinstance(node.func.value, ast.Name)):
        yield node.func.value.id

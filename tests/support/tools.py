"""External programs the tests run (swaks, msmtp, fail2ban-regex…): found on PATH or in the
sbin directories; a test that needs a missing one is skipped on a developer's machine but fails
in CI (``CI=true``), where .ci/run installs them and a skip would hide a missing install step."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def find(name: str) -> str | None:
    """The path of program ``name``, or None."""
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
         if os.access(path, os.X_OK)), None)


def program(name: str, package: str) -> str:
    """The path of ``name``; skips the test when it is missing (fails it in CI)."""
    path = find(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {package}; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path

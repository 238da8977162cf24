"""Faults a test injects into the real system calls: a disk that fills up at the n-th fsync."""

from __future__ import annotations

import errno
import os

import pytest


def fail_fsync_at(monkeypatch: pytest.MonkeyPatch, call: int,
                  error: int = errno.ENOSPC) -> None:
    """From now on, the ``call``-th ``os.fsync`` (counting from 1) raises ``OSError(error)``;
    every other call syncs for real. ``monkeypatch.undo()`` ends it."""
    real_fsync = os.fsync
    calls = 0

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == call:
            raise OSError(error, os.strerror(error))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

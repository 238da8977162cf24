"""Start geomail for tests: in-process (App on port 0) or as a subprocess (crash tests, binary)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from geomail.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
# argon2id hash of PASSWORD, made once with `geomail passwd` (hashing per test costs time).
PASSWORD_HASH = None  # filled lazily by password_hash()


def password_hash() -> str:
    """The hash of PASSWORD (computed once per test process)."""
    global PASSWORD_HASH
    if PASSWORD_HASH is None:
        from geomail.passwords import hash_password

        PASSWORD_HASH = hash_password(PASSWORD)
    return PASSWORD_HASH


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config for tests: test.com and example.com local, every listener on 127.0.0.1:0."""
    config: dict[str, Any] = {
        "hostname": "mx.test.com",
        "domains": ["test.com", "example.com"],
        "data_dir": str(tmp_path / "data"),
        "users": {
            "test1@test.com": {},
            "alice@example.com": {"password": password_hash()},
            "bob@example.com": {"password": password_hash()},
        },
        "aliases": {
            "postmaster@example.com": "alice@example.com",
            "team@example.com": ["alice@example.com", "bob@example.com"],
            "al@example.com": "alice@example.com",
        },
        "listen": {"smtp": ["127.0.0.1:0"]},
        "limits": {"shutdown_grace": "2s"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@contextlib.contextmanager
def running_app(raw: dict[str, Any]) -> Iterator[Any]:
    """An App serving ``raw`` in this process (cooperatively, under gevent)."""
    from geomail.app import App

    app = App(parse_config(raw, source="<test>"))
    app.bind()
    app.start()
    try:
        yield app
    finally:
        app.stop(grace=1)


class GeomailProcess:
    """``geomail serve`` in a child process; learns its ports from the 'listening' log lines."""

    def __init__(self, config_path: Path, command: list[str] | None = None) -> None:
        self.config_path = config_path
        self.command = command or _default_command()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, list[int]] = {}
        self.log_path = config_path.with_suffix(".log")

    def start(self, timeout: float = 30) -> GeomailProcess:
        """Start (or restart) the server and wait until every listener is up."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.command, "serve", "-c", str(self.config_path)],
                                         stdout=log, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if " INFO started " in run:
                self.ports = {}
                for kind, port in re.findall(r"listening service=(\w+) address=\S+:(\d+)", run):
                    self.ports.setdefault(kind, []).append(int(port))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"geomail exited {self.proc.returncode}:\n{run}")
            time.sleep(0.02)
        raise RuntimeError(f"geomail did not start:\n{self.log()}")

    def port(self, kind: str = "smtp") -> int:
        return self.ports[kind][0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the crash the durability tests need."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def _default_command() -> list[str]:
    binary = os.environ.get("GEOMAIL_BIN")
    return [binary] if binary else [sys.executable, "-m", "geomail"]


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path

"""Helpers the test tiers share: free ports, waiting for a condition, real peer servers."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel says is free on ``host`` now (racy by nature: use it at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_on(hosts: Iterable[str], kind: int = socket.SOCK_STREAM) -> int:
    """A port free on every one of ``hosts`` (e.g. 127.0.0.2 and 127.0.0.3 for two MXes)."""
    hosts = list(hosts)
    for _ in range(100):
        port = free_port(hosts[0], kind)
        try:
            for host in hosts[1:]:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen | None, grace: float = 5.0) -> None:
    """Terminate a helper process we started, kill it if it lingers past ``grace`` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""Real receiving MTAs for tests: Postfix's smtp-sink, and aiosmtpd in a subprocess (TLS, AUTH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from . import port_open, stop_process, wait_for

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
PEER_SCRIPT = os.path.join(os.path.dirname(__file__), "smtpd_peer.py")


@dataclass
class Received:
    """One message as a test server captured it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # LF line endings, dots unstuffed, the receiver's own headers removed
    mail_args: str = ""
    helo: str = ""
    meta: dict = field(default_factory=dict)


class SmtpSink:
    """``smtp-sink`` on ``host:port`` capturing every transaction to a file (``-d``).

    ``options`` are passed through, e.g. ``["-r", "RCPT"]`` (4xx to every RCPT), ``["-f",
    "RCPT"]`` (5xx), ``["-Q", "MAIL"]`` (421 and disconnect), ``["-8"]`` (no 8BITMIME),
    ``["-p"]`` (no PIPELINING). Captures land in a world-writable temp dir because smtp-sink
    must drop to ``nobody`` when started as root; ``capture=False`` discards them (benchmarks).
    """

    def __init__(self, host: str, port: int, options: list[str] | None = None,
                 hostname: str = "sink.test", capture: bool = True) -> None:
        self.host, self.port = host, port
        self.options = list(options or [])
        self.hostname = hostname
        self.capture = capture
        self.dump_dir = tempfile.mkdtemp(prefix="smtp-sink-")
        os.chmod(self.dump_dir, 0o777)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        cmd = [SMTP_SINK]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        if self.capture:
            cmd += ["-d", os.path.join(self.dump_dir, "%Y%m%d%H%M%S.")]
        cmd += ["-h", self.hostname, *self.options, f"{self.host}:{self.port}", "256"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._alive() and port_open(self.host, self.port), 10,
                 message=f"smtp-sink on {self.host}:{self.port}")
        return self

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"smtp-sink exited: {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        return True

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dump_dir, ignore_errors=True)

    def messages(self) -> list[Received]:
        """Every captured transaction, oldest first."""
        found = []
        for name in sorted(os.listdir(self.dump_dir)):
            with open(os.path.join(self.dump_dir, name), "rb") as handle:
                found.append(parse_sink_dump(handle.read()))
        return found

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def parse_sink_dump(data: bytes) -> Received:
    """smtp-sink's dump format (see its man page): X- envelope lines, a three-line Received:,
    the message as received (LF endings), then one empty line."""
    lines = data.split(b"\n")
    mail, rcpts, helo, meta = "", [], "", {}
    i = 0
    while i < len(lines) and lines[i].startswith(b"X-"):
        name, _, value = lines[i].decode().partition(": ")
        if name == "X-Mail-Args":
            mail = value
        elif name == "X-Rcpt-Args":
            rcpts.append(value.split()[0].strip("<>"))
        elif name == "X-Helo-Args":
            helo = value
        elif name == "X-Client-Proto":
            meta["proto"] = value  # SMTP (after HELO) or ESMTP (after EHLO)
        i += 1
    assert lines[i].startswith(b"Received: "), lines[i]
    i += 1
    while i < len(lines) and lines[i].startswith(b"\t"):
        i += 1
    content = b"\n".join(lines[i:])
    assert content.endswith(b"\n\n") or content == b"\n", content[-20:]
    return Received(mail.split()[0].strip("<>") if mail else "", rcpts, content[:-1],
                    mail_args=mail, helo=helo, meta=meta)


class SmtpdPeer:
    """aiosmtpd in a subprocess on ``host:port``; ``tls``: none, starttls or implicit (needs
    ``cert``/``key``; STARTTLS is offered, not required); ``auth``: "user:password" makes AUTH
    required (after TLS); ``size``: SIZE limit; ``tls12``: TLS 1.2 at most.
    See smtpd_peer.py for the recipients it rejects, defers, defers once or stalls on."""

    def __init__(self, host: str, port: int, tls: str = "none", cert: str | None = None,
                 key: str | None = None, auth: str | None = None,
                 size: int | None = None, tls12: bool = False) -> None:
        self.host, self.port = host, port
        self.out = tempfile.mkdtemp(prefix="smtpd-peer-")
        self.cmd = [sys.executable, PEER_SCRIPT, "--host", host, "--port", str(port),
                    "--out", self.out, "--tls", tls]
        if cert and key:
            self.cmd += ["--cert", cert, "--key", key]
        if auth:
            self.cmd += ["--auth", auth]
        if size:
            self.cmd += ["--size", str(size)]
        if tls12:
            self.cmd.append("--tls12")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpdPeer:
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"READY":
            self.process.kill()
            raise AssertionError(f"smtpd peer failed: {line!r} {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        return self

    def stop(self) -> None:
        stop_process(self.process, 10)
        self.process = None
        shutil.rmtree(self.out, ignore_errors=True)

    def stalled(self) -> bool:
        """True once a message for a ``stall*`` recipient arrived and is being held unanswered."""
        return any(n.startswith("stalled.") for n in os.listdir(self.out))

    def messages(self) -> list[Received]:
        found = []
        for name in sorted(n for n in os.listdir(self.out) if n.endswith(".json")):
            base = os.path.join(self.out, name[:-5])
            with open(base + ".json") as handle:
                meta = json.load(handle)
            with open(base + ".eml", "rb") as handle:
                raw = handle.read()
            found.append(Received(meta["mail_from"], meta["rcpt_tos"],
                                  raw.replace(b"\r\n", b"\n"), meta=meta))
        return found

    def __enter__(self) -> SmtpdPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""``sendmail(1)`` for cron, scripts and web apps: the message on stdin goes to the running server.

Accepts the options programs actually pass (``-t``, ``-f``, ``-F``, ``-i``/``-oi``, ``-o*``,
``-B``, ``-N``, ``-v``); the others are refused with exit 64. The message is submitted over
SMTP to the first ``smtp`` listener (relaying rights come from ``relay.allow_networks``), or,
when the config has ``sendmail: {username, password}``, to the submission listener with AUTH.
"""

from __future__ import annotations

import getpass
import io
import os
import smtplib
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import BinaryIO, TextIO

from geomail.config import Config, ListenerConfig, load_config
from geomail.errors import ConfigError

# sysexits.h, as sendmail uses them
EX_USAGE, EX_DATAERR, EX_NOUSER, EX_UNAVAILABLE, EX_SOFTWARE, EX_TEMPFAIL, EX_CONFIG = \
    64, 65, 67, 69, 70, 75, 78
DEFAULT_CONFIG = "/etc/geomail/geomail.yaml"
IGNORED_WITH_VALUE = ("-B", "-N", "-R", "-V", "-X", "-L", "-O")


class UsageError(Exception):
    """The command line is not one sendmail accepts."""


@dataclass
class Options:
    """What the command line asked for."""

    config: str = DEFAULT_CONFIG
    sender: str | None = None
    from_headers: bool = False  # -t: recipients from To/Cc/Bcc
    dot_ends: bool = True  # without -i, a line holding only "." ends the message
    recipients: list[str] = field(default_factory=list)
    verbose: bool = False


def parse_args(argv: Sequence[str]) -> Options:
    """sendmail's option syntax: ``-f addr``/``-faddr``, ``-oi``, then recipients."""
    opts = Options()
    args = list(argv)
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg == "--":
            break
        flag, inline = arg[:2], arg[2:]
        if flag in ("-c", "-C"):
            opts.config = _value(flag, inline, args)
        elif flag in ("-f", "-r"):
            opts.sender = _value(flag, inline, args)
        elif flag == "-F":
            _value(flag, inline, args)  # full name: the From header is the message's business
        elif flag == "-t":
            opts.from_headers = True
        elif flag == "-i" or arg in ("-oi", "-oI"):
            opts.dot_ends = False
        elif flag == "-o" or arg.startswith("-od") or arg.startswith("-oe"):
            if arg == "-o":
                _value(flag, inline, args)
        elif flag == "-v":
            opts.verbose = True
        elif flag in IGNORED_WITH_VALUE:
            _value(flag, inline, args)
        elif arg in ("-bm", "-U"):
            pass
        else:
            raise UsageError(f"unsupported option {arg}")
    opts.recipients = [a for arg in args for a in arg.split(",") if a.strip()]
    return opts


def _value(flag: str, inline: str, args: list[str]) -> str:
    """An option's value: glued to it (``-faddr``) or the next argument (``-f addr``)."""
    if inline:
        return inline
    if not args:
        raise UsageError(f"option {flag} needs a value")
    return args.pop(0)


def read_message(stream: BinaryIO, dot_ends: bool) -> bytes:
    """The message from stdin, with LF line endings."""
    lines = []
    for line in stream:
        stripped = line.rstrip(b"\r\n")
        if dot_ends and stripped == b".":
            break
        lines.append(stripped + b"\n")
    return b"".join(lines)


def recipients_from_headers(message: bytes) -> tuple[list[str], bytes]:
    """-t: the addresses in To, Cc and Bcc, and the message with its Bcc header removed."""
    header_end = message.find(b"\n\n")
    head = message if header_end < 0 else message[: header_end + 1]
    parsed = BytesHeaderParser().parse(io.BytesIO(head))
    fields = [v for name in ("to", "cc", "bcc") for v in parsed.get_all(name, [])]
    addresses = [addr for _, addr in getaddresses([str(f) for f in fields]) if addr]
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            kept.append(line)
    rest = b"" if header_end < 0 else message[header_end + 1 :]
    return addresses, b"".join(kept) + rest


def _client_host(listener: ListenerConfig) -> str:
    """Where to connect for a listener: its address, or loopback for a wildcard."""
    if listener.host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if listener.host == "::":
        return "::1"
    return listener.host


def submit(config: Config | None, sender: str, recipients: list[str], message: bytes,
           credentials: tuple[str, str] | None, timeout: float = 60) -> None:
    """Hand the message to the running server; smtplib errors propagate."""
    listeners = config.listeners_of("smtp") if config else ()
    if credentials and config and config.listeners_of("submission"):
        listener = config.listeners_of("submission")[0]
    else:
        listener = listeners[0] if listeners else ListenerConfig("smtp", "127.0.0.1", 25)
    data = message.replace(b"\n", b"\r\n")
    with smtplib.SMTP(_client_host(listener), listener.port, timeout=timeout,
                      local_hostname="localhost") as client:
        client.ehlo()
        if client.has_extn("starttls"):
            context = ssl.create_default_context()
            context.check_hostname = False  # our own server on this machine
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
            client.ehlo()
        if credentials:
            client.login(*credentials)
        refused = client.sendmail(sender, recipients, data)
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)


def main(argv: Sequence[str], stdin: BinaryIO | None = None, stderr: TextIO | None = None) -> int:
    """Run sendmail; returns a sysexits status."""
    err = stderr or sys.stderr
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        print(f"sendmail: {exc}", file=err)
        return EX_USAGE
    try:
        config: Config | None = load_config(opts.config)
    except ConfigError as exc:
        if os.path.exists(opts.config) and os.access(opts.config, os.R_OK):
            print(f"sendmail: {opts.config}: {exc}", file=err)
            return EX_CONFIG
        config = None  # unreadable config (another user): use the defaults
    message = read_message(stdin or sys.stdin.buffer, opts.dot_ends)
    recipients = list(opts.recipients)
    if opts.from_headers:
        found, message = recipients_from_headers(message)
        recipients += found
    if not recipients:
        print("sendmail: no recipients (give addresses, or -t to read To/Cc/Bcc)", file=err)
        return EX_USAGE
    domain = config.domains[0] if config else socket.getfqdn()
    sender = opts.sender if opts.sender is not None else f"{getpass.getuser()}@{domain}"
    credentials = (config.sendmail.username, config.sendmail.password) \
        if config and config.sendmail else None
    try:
        submit(config, sender, recipients, message, credentials)
    except smtplib.SMTPRecipientsRefused as exc:
        for address, (code, text) in exc.recipients.items():
            print(f"sendmail: {address}: {code} {text.decode(errors='replace')}", file=err)
        return EX_NOUSER
    except smtplib.SMTPResponseException as exc:
        error: bytes | str = exc.smtp_error
        said = error.decode(errors="replace") if isinstance(error, bytes) else error
        print(f"sendmail: server said {exc.smtp_code} {said}", file=err)
        return EX_TEMPFAIL if 400 <= exc.smtp_code < 500 else EX_DATAERR
    except (OSError, smtplib.SMTPException) as exc:
        print(f"sendmail: cannot reach the geomail server: {exc}", file=err)
        return EX_UNAVAILABLE
    return 0

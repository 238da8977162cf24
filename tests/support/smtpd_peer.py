"""A real receiving SMTP server for tests (aiosmtpd in its own process, no gevent): optional
STARTTLS or implicit TLS, optional AUTH, every message written to a directory.

Run as ``python smtpd_peer.py --host 127.0.0.2 --port N --out DIR [options]``; prints READY.
Recipients whose local part starts with ``reject`` get 550 5.1.1, ``defer`` get 451 4.3.0,
``flaky`` get 451 4.3.0 the first time each address is given and 250 after that. The first
message with a recipient whose local part starts with ``stall`` is never answered after its
final dot (and not written; ``DIR/stalled.<n>`` marks that it arrived); later ones are accepted.
The peer keeps these memories for as long as it runs, across connections.
Each message is ``DIR/<n>.eml`` (the content as received, CRLF) plus ``DIR/<n>.json``
(mail_from, rcpt_tos, mail_options, tls, auth), the JSON written last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out: str) -> None:
        self.out = out
        self.count = 0
        self.lock = threading.Lock()
        self.flaky_seen: set[str] = set()
        self.stalled = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rpartition("@")[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        if local.startswith("defer"):
            return "451 4.3.0 Try again later"
        if local.startswith("flaky") and address.lower() not in self.flaky_seen:
            self.flaky_seen.add(address.lower())
            return "451 4.3.0 Try again later (first attempt)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        stall = any(r.rpartition("@")[0].lower().startswith("stall") for r in envelope.rcpt_tos)
        if stall and not self.stalled:
            self.stalled = True
            with open(os.path.join(self.out, f"stalled.{os.getpid()}"), "w") as handle:
                json.dump({"rcpt_tos": envelope.rcpt_tos}, handle)
            await asyncio.sleep(3600)  # the client sees no reply to its final dot
        with self.lock:
            self.count += 1
            n = self.count
        base = os.path.join(self.out, f"{n:05d}")
        with open(base + ".eml.tmp", "wb") as handle:
            handle.write(envelope.original_content or envelope.content)
        os.replace(base + ".eml.tmp", base + ".eml")
        auth = getattr(session, "auth_data", None)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "mail_options": envelope.mail_options,
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": bool(session.authenticated), "peer": list(session.peer),
                "login": auth.login.decode() if isinstance(auth, LoginPassword) else None}
        with open(base + ".json.tmp", "w") as handle:
            json.dump(meta, handle, default=str)
        os.replace(base + ".json.tmp", base + ".json")
        return "250 2.0.0 OK queued"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--auth", help="user:password; AUTH is then required")
    parser.add_argument("--tls12", action="store_true", help="TLS 1.2 at most")
    parser.add_argument("--size", type=int, default=33554432, help="SIZE limit (RFC 1870)")
    args = parser.parse_args()

    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    kwargs: dict = {"enable_SMTPUTF8": True, "decode_data": False,
                    "data_size_limit": args.size}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == user and auth_data.password.decode() == password)
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs.update(authenticator=authenticator, auth_required=True,
                      # aiosmtpd only knows about STARTTLS; implicit TLS is TLS all along
                      auth_require_tls=args.tls == "starttls")
    if args.tls == "starttls":
        kwargs.update(tls_context=context)
    if context is not None and args.tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    controller = Controller(Handler(args.out), hostname=args.host, port=args.port,
                            ssl_context=context if args.tls == "implicit" else None,
                            server_hostname="localhost", ready_timeout=10, **kwargs)
    controller.start()
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()

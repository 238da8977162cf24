"""A receiving SMTP server that answers with hostile reply text: a tiny raw-socket server (one
thread, so one greenlet under the tests' monkey-patching, per connection) on a real port.

Recipients whose local part starts with ``reject`` get ``REJECT``, ``defer`` get ``DEFER``;
others are accepted and their messages counted. No PIPELINING is offered: one reply per line.
"""

from __future__ import annotations

import socketserver
import threading

# RFC 5321 4.2.1 allows HT, SP and printable ASCII in reply text; these carry ESC (a terminal
# colour sequence), NUL, DEL, a bare CR, a BEL-terminated OSC title sequence and 8-bit octets.
REJECT = b"550 5.1.1 bad\x1b[31m\x00\x7fuser\r\n"
DEFER = b"451 4.3.0 slow\x1b]0;pwned\x07 down\xff\xfe\rnow\r\n"


class _Handler(socketserver.StreamRequestHandler):
    server: HostileMX

    def handle(self) -> None:
        self.wfile.write(b"220 hostile.test ESMTP\r\n")
        while line := self.rfile.readline(4096):
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-hostile.test\r\n250 8BITMIME\r\n")
            elif verb == b"RCPT":
                local = line.partition(b"<")[2].partition(b"@")[0].lower()
                self.wfile.write(REJECT if local.startswith(b"reject") else
                                 DEFER if local.startswith(b"defer") else b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                while self.rfile.readline(1 << 20) not in (b".\r\n", b""):
                    pass
                with self.server.lock:
                    self.server.messages += 1
                self.wfile.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 2.0.0 bye\r\n")
                return
            else:  # MAIL, RSET, NOOP
                self.wfile.write(b"250 2.0.0 ok\r\n")


class HostileMX(socketserver.ThreadingTCPServer):
    """``with HostileMX(host, port) as mx: ...``; serves until the block ends."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.lock = threading.Lock()
        self.messages = 0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    def __enter__(self) -> HostileMX:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

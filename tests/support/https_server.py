"""A real HTTPS server on loopback for MTA-STS tests (RFC 8461 3.3): serves the files of a
directory (``.well-known/mta-sts.txt`` as text/plain) with a certificate from the test's CA.

Run as a subprocess (``python tests/support/https_server.py --dir D --cert PEM --port N``) so
that it is independent of the test process's gevent hub; ``HTTPSServer`` starts and stops it.
"""

from __future__ import annotations

import argparse
import http.server
import os
import ssl
import subprocess
import sys
from pathlib import Path

SCRIPT = os.path.abspath(__file__)


class HTTPSServer:
    """``python https_server.py`` on ``host:port``, serving ``directory/<Host>/...`` (one server
    for several ``mta-sts.<domain>`` names); ``policy(name, text)`` writes a policy file."""

    def __init__(self, directory: Path, cert: str, host: str, port: int) -> None:
        self.directory = directory
        self.cert, self.host, self.port = cert, host, port
        self.process: subprocess.Popen[bytes] | None = None

    def policy(self, name: str, text: str) -> None:
        path = self.directory / name / ".well-known" / "mta-sts.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def start(self) -> HTTPSServer:
        self.process = subprocess.Popen(
            [sys.executable, SCRIPT, "--dir", str(self.directory), "--cert", self.cert,
             "--host", self.host, "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"READY":
            self.process.kill()
            raise AssertionError(f"https server failed: {line!r}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> HTTPSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {".txt": "text/plain"}
    root = "."

    def do_POST(self) -> None:
        """Keep the body as ``<root>/posted/<n>`` with its Content-Type (TLS-RPT https rua)."""
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        posted = os.path.join(self.root, "posted")
        os.makedirs(posted, exist_ok=True)
        name = os.path.join(posted, str(len(os.listdir(posted))))
        with open(name + ".tmp", "wb") as handle:
            handle.write(self.headers.get("Content-Type", "").encode() + b"\n" + body)
        os.rename(name + ".tmp", name)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def translate_path(self, path: str) -> str:
        host = self.headers.get("Host", "").split(":")[0].lower()
        self.directory = os.path.join(self.root, os.path.basename(host) or "_")
        return super().translate_path(path)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _Handler.root = args.dir
    server = http.server.ThreadingHTTPServer((args.host, args.port), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

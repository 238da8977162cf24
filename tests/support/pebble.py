"""Pebble, Let's Encrypt's test ACME server (RFC 8555), started privately on 127.0.0.1.

Its own HTTPS certificate comes from a trustme CA (``ca_file`` for geomail's ``tls.acme``);
its validation authority resolves names through the test's dnsmasq and connects to
``http_port`` (geomail's web listener) for http-01.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request

import trustme

from . import free_port, stop_process, wait_for

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"


class Pebble:
    """``pebble -config <json> -dnsserver <dnsmasq>``; ``start()``, then ``directory``."""

    def __init__(self, http_port: int, dnsserver: str, validity: int = 0) -> None:
        self.http_port = http_port
        self.dnsserver = dnsserver
        self.validity = validity  # seconds; 0: pebble's default (about five years)
        self.port = free_port()
        self.management_port = free_port()
        self.ca = trustme.CA()
        self.workdir = tempfile.mkdtemp(prefix="pebble-")
        self.ca_file = os.path.join(self.workdir, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.workdir, "pebble.log")

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> Pebble:
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        cert, key = (os.path.join(self.workdir, n) for n in ("cert.pem", "key.pem"))
        leaf.private_key_pem.write_to_path(key)
        with open(cert, "wb") as handle:
            for blob in leaf.cert_chain_pems:
                handle.write(blob.bytes())
        settings: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": cert, "privateKey": key,
            "httpPort": self.http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }
        if self.validity:
            settings["certificateValidityPeriod"] = self.validity
        config = os.path.join(self.workdir, "pebble.json")
        with open(config, "w", encoding="utf-8") as handle:
            json.dump({"pebble": settings}, handle)
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
               "PEBBLE_AUTHZREUSE": "0"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [PEBBLE, "-config", config, "-dnsserver", self.dnsserver],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        wait_for(self._ready, timeout=10, interval=0.05, message="pebble's directory")
        return self

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            body: bytes = response.read()
        return body

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"pebble exited: {self.log()}")
        try:
            self._get(self.directory)
        except OSError:
            return False
        return True

    def root_pem(self) -> str:
        """The root that signs the certificates pebble issues (management API ``/roots/0``)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0").decode()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

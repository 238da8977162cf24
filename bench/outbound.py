"""Outbound throughput: N queued messages to D domains, delivered through dnsmasq + smtp-sink.

Phase 1 queues the messages durably (``Queue.put``, concurrent, as SMTP sessions would);
phase 2 starts a fresh queue on that directory (``load()``) and times it until the queue is
empty: messages delivered per second. Prints one JSON line.

    .venv/bin/python bench/outbound.py [--messages 2000] [--domains 20] [--size 10240]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pool import Pool  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from geomail.config import RelayConfig  # noqa: E402
from geomail.courier.mx import MXResolver  # noqa: E402
from geomail.courier.smtp import SMTPCourier  # noqa: E402
from geomail.delivery import Outcomes  # noqa: E402
from geomail.queue.queue import Queue  # noqa: E402
from geomail.spool import BytesBody  # noqa: E402
from tests.support import free_port_on  # noqa: E402
from tests.support.dns import Dnsmasq  # noqa: E402
from tests.support.mta import SmtpSink  # noqa: E402


class Parked:
    """A courier that never finishes: phase 1 only fills the queue."""

    def __init__(self) -> None:
        self.never = Event()

    def deliver(self, sender, recipients, body) -> Outcomes:  # type: ignore[no-untyped-def]
        self.never.wait()
        return {}


def message(n: int, size: int) -> bytes:
    head = (f"From: bench@example.com\nTo: user{n}@d{n}.bench.test\nSubject: bench {n}\n"
            f"Message-ID: <bench.{n}@example.com>\n\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    return head + line * max(1, (size - len(head)) // len(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--max-connections", type=int, default=50)
    parser.add_argument("--per-domain", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sink_host = "127.0.0.2"
    port = free_port_on([sink_host])
    dns = Dnsmasq(ttl=300)  # real zones have TTLs: the resolver caches MX and A answers
    for d in range(args.domains):
        dns.mx(f"d{d}.bench.test", f"mx.d{d}.bench.test").host(f"mx.d{d}.bench.test", sink_host)
    dns.start()
    sink = SmtpSink(sink_host, port, ["-m", "1024"], capture=False).start()
    work = tempfile.mkdtemp(prefix="geomail-bench-")
    relay = RelayConfig(nameservers=((dns.address, dns.port),), mx_port=port,
                        max_connections=args.max_connections,
                        max_connections_per_domain=args.per_domain, delay_warning=0.0)
    qdir = os.path.join(work, "queue")
    try:
        parked = Parked()
        filler = Queue(qdir, relay, "bench.example.com", local=parked, remote=parked,
                       is_local=lambda a: False)
        filler.load()
        bodies = [message(n, args.size) for n in range(args.messages)]
        start = time.monotonic()
        pool = Pool(100)
        for n, body in enumerate(bodies):
            pool.spawn(filler.put, "bench@example.com",
                       [f"user{n}@d{n % args.domains}.bench.test"], BytesBody(body))
        pool.join()
        put_seconds = time.monotonic() - start
        filler.stop(0.1)

        courier = SMTPCourier(relay, "bench.example.com", MXResolver.from_config(relay))
        deferrals: list[str] = []

        def on_event(event, item, rcpt) -> None:  # type: ignore[no-untyped-def]
            if event == "deferred" and rcpt is not None:
                deferrals.append(rcpt.last_error or "")

        queue = Queue(qdir, relay, "bench.example.com", local=parked, remote=courier,
                      is_local=lambda a: False, on_event=on_event)
        start = time.monotonic()
        loaded = queue.load()
        while any(name.endswith(".json") for name in os.listdir(qdir)):
            gevent.sleep(0.05)
        seconds = time.monotonic() - start
        queue.stop(1)
        courier.close()
        print(json.dumps({
            "bench": "outbound", "messages": loaded, "domains": args.domains,
            "size": args.size, "put_per_second": round(args.messages / put_seconds, 1),
            "seconds_until_empty": round(seconds, 2),
            "delivered_per_second": round(loaded / seconds, 1),
            "max_connections": args.max_connections, "per_domain": args.per_domain,
            "deferrals": len(deferrals), "first_deferral": deferrals[0] if deferrals else None,
        }))
    finally:
        sink.cleanup()
        dns.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

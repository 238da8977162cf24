"""Durable Maildir-style creates from Python, off the gevent hub.

usage: python gevent_fsync.py DIR THREADS MAXFILES MAXSECONDS SIZE
Each file: open tmp/NAME, write SIZE bytes, fsync, close, rename into new/, fsync(new/)
(the rule geomail's design requires before replying 250), run in gevent's threadpool
with THREADS workers and as many greenlets feeding it. Bounded by MAXFILES and MAXSECONDS.
Prints files=N seconds=S files_per_sec=R like tools/fsyncbench. DIR/tmp and DIR/new must be
empty; the files are left in place (the harness deletes them at the end, see fsyncbench.c).
"""
import os
import sys
import time

import gevent
from gevent.threadpool import ThreadPool


def main():
    d, threads, maxfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    maxsec, size = float(sys.argv[4]), int(sys.argv[5])
    if not (1 <= threads <= 64 and 1 <= maxfiles <= 100000 and 0 < maxsec <= 120):
        sys.exit("bad bounds")
    tmp, new = os.path.join(d, "tmp"), os.path.join(d, "new")
    for p in (tmp, new):
        os.makedirs(p, exist_ok=True)
        if os.listdir(p):
            sys.exit(f"{p} must be empty")
    data = (b"x" * 77 + b"\n") * (size // 78) + b"x" * (size % 78)
    pool = ThreadPool(threads)
    dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    state = {"n": 0}
    t0 = time.monotonic()
    deadline = t0 + maxsec

    def write_one(name):
        tp, np_ = os.path.join(tmp, name), os.path.join(new, name)
        fd = os.open(tp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tp, np_)
        os.fsync(dfd)

    def worker(w):
        while state["n"] < maxfiles and time.monotonic() < deadline:
            i = state["n"]
            state["n"] += 1
            pool.apply(write_one, (f"{i}.{w}.bench",))

    gevent.joinall([gevent.spawn(worker, w) for w in range(threads)])
    el = time.monotonic() - t0
    print(f"files={state['n']} seconds={el:.3f} files_per_sec={state['n'] / el:.1f}")


if __name__ == "__main__":
    main()

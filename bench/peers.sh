#!/bin/bash
# peers.sh - build the C tools, then start each target (smtp-sink, Postfix, aiosmtpd, Dovecot
# POP3, geomail from this checkout), run the loads, stop the targets, print a table and a
# geomail-vs-peers summary (bench/README.md explains every figure).
# Everything listens on 127.0.0.1 only; every load is bounded; the run has a time budget.
#
#   bench/peers.sh                      # full run (~12-15 min on the 2-core box)
#   bench/peers.sh --quick --reps 1 --reps-cheap 1 --lat-reps 1   # smoke test (~4 min)
#   bench/peers.sh --only smtp --targets smtp-sink,postfix,aiosmtpd,geomail
#   bench/peers.sh -h                   # all options
#   bench/peers.sh --imap [--quick]     # issue 14: IMAP beside Dovecot's imapd (bench/imap.py -h)
#
# Needs root (Postfix/Dovecot private instances, chown of Maildirs to uid 5000, geomail's
# bench user), postfix (smtp-source, smtp-sink), dovecot-pop3d, cc, and a Python with gevent +
# aiosmtpd (default: the project's .venv; override with PYTHON=...). geomail is
# $GEOMAIL_CMD (default: the project's .venv/bin/geomail; GEOMAIL_CMD=dist/geomail for the binary).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(dirname "$HERE")"
PYTHON="${PYTHON:-$PROJECT/.venv/bin/python}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "peers.sh: missing $1 ($2)" >&2; exit 2; }; }
need cc "apt-get install gcc"
need smtp-source "apt-get install postfix"
need smtp-sink "apt-get install postfix"
need postfix "apt-get install postfix"
need dovecot "apt-get install dovecot-pop3d"
"$PYTHON" -c 'import gevent, aiosmtpd' 2>/dev/null || { echo "peers.sh: $PYTHON lacks gevent/aiosmtpd" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "peers.sh: run as root (private Postfix/Dovecot instances)" >&2; exit 2; }

mkdir -p "$HERE/run"
for t in fsyncbench tcprtt smtplat; do
  if [ ! -x "$HERE/tools/$t" ] || [ "$HERE/tools/$t.c" -nt "$HERE/tools/$t" ]; then
    cc -O2 -Wall -o "$HERE/tools/$t" "$HERE/tools/$t.c"
  fi
done

# the idle-connection test holds 10,000 sockets in the harness and in the server under test
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# IMAP (issue 14) is a script of its own: bench/imap.py, geomail and a private Dovecot imapd
if [ "${1:-}" = "--imap" ]; then
  shift
  [ -x /usr/lib/dovecot/imap ] || { echo "peers.sh: missing Dovecot's imap (apt-get install dovecot-imapd)" >&2; exit 2; }
  exec timeout -k 30 3600 "$PYTHON" "$HERE/imap.py" "$@"
fi

# hard stop for the whole run: the harness has its own --budget (default 1080 s) and stops
# its targets on SIGTERM; timeout is the outer guard
exec timeout -k 30 1320 "$PYTHON" "$HERE/mailbench.py" "$@"

"""Operating-system chores: dropping root privileges, systemd readiness (sd_notify), the umask."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket

from geomail.errors import ConfigError
from geomail.log import event

log = logging.getLogger(__name__)


def prepare_data_dir(path: str, user: str | None) -> None:
    """Create ``path`` (mode 0700) and, when running as root, give it to ``user``."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.geteuid() == 0 and user and user != "root":
        entry = _lookup(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def drop_privileges(user: str | None) -> None:
    """Become ``user`` (and its groups) if started as root; refuse to stay root by accident."""
    if os.geteuid() != 0:
        return
    if user is None:
        raise ConfigError("user: geomail was started as root; set 'user:' to the account to run "
                          "as after binding the ports (or 'root' to stay root, not advised)")
    if user == "root":
        event(log, logging.WARNING, "privileges", action="kept", user="root",
              reason="configured")
        return
    entry = _lookup(user)
    os.setgroups([g.gr_gid for g in grp.getgrall() if user in g.gr_mem] + [entry.pw_gid])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid:
        raise RuntimeError(f"could not switch to user {user}")
    os.environ["HOME"] = entry.pw_dir
    event(log, logging.INFO, "privileges", action="dropped", user=user, uid=entry.pw_uid,
          gid=entry.pw_gid)


def _lookup(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"user: no such system user {user!r} (create it: useradd --system "
                          f"--home-dir /var/lib/geomail --shell /usr/sbin/nologin {user})"
                          ) from None


def sd_notify(state: str) -> bool:
    """Tell systemd about our state (``READY=1``, ``STOPPING=1``); False without systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        event(log, logging.WARNING, "sd-notify-failed", state=state, error=str(exc))
        return False
    return True

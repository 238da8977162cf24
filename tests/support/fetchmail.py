"""fetchmail (Debian's) as the POP3 and IMAP client tests run it: one poll of ALICE's mailbox
over TLS checked against the test CA, every message handed to an MDA that stores it as a file.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tests.support.geomail import PASSWORD
from tests.support.pop3 import ALICE, header_fields

FETCHMAIL = shutil.which("fetchmail") or "/usr/bin/fetchmail"


def fetchmail(tmp_path: Path, proto: str, port: int, tls: dict[str, str], ssl_mode: str,
              keep: bool) -> tuple[list[bytes], str]:
    """Poll with ``proto`` (POP3 or IMAP); the messages fetched (sorted) and fetchmail's log.
    ``ssl_mode`` is the rc file's TLS words (``ssl ...`` for implicit TLS, else STARTTLS)."""
    out = tmp_path / "fetched"
    out.mkdir()
    home = tmp_path / "fetchmail-home"
    home.mkdir(mode=0o700)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""\
set no syslog
poll localhost via 127.0.0.1 with proto {proto} port {port}
    user "{ALICE}" there with password "{PASSWORD}" is "{pwd.getpwuid(os.getuid()).pw_name}" here
    {ssl_mode} sslcertck sslcertfile "{tls["ca"]}" sslcommonname "localhost"
    {"keep" if keep else "no keep"} fetchall
    mda "/bin/sh -c 'cat > $(mktemp {out}/msg.XXXXXX)'"
""")
    rc.chmod(0o600)  # fetchmail refuses a readable file holding a password
    env = {**os.environ, "FETCHMAILHOME": str(home), "HOME": str(home)}
    result = subprocess.run([FETCHMAIL, "-f", str(rc), "--nodetach", "-v"], env=env,
                            capture_output=True, text=True, timeout=60)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"fetchmail exited {result.returncode}:\n{log}"
    return sorted(path.read_bytes() for path in out.iterdir()), log


def without_field(message: bytes, marker: bytes) -> bytes:
    """``message`` without the one header field containing ``marker`` (a client's trace)."""
    fields = header_fields(message)
    added = [field for field in fields if marker in field]
    assert len(added) == 1, f"expected one field with {marker!r} in:\n{b''.join(fields)!r}"
    return message.replace(added[0], b"", 1)

"""Password hashing, login checks, throttling, the fail2ban log lines and `geomail passwd`."""

from __future__ import annotations

import ast
import configparser
import dataclasses
import io
import logging
import os
import pty
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import argon2
import gevent
import pytest
from gevent import monkey

from geomail import passwords, throttle
from geomail.config import Limits, UserConfig
from geomail.log import JSONFormatter, KeyValueFormatter
from geomail.login import Authenticator, AuthResult
from geomail.passwords import hash_password, needs_rehash, passwd_command
from geomail.userdb import UserDB
from tests.support.tools import program

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "conf/fail2ban/filter.d/geomail.conf"
PASSWORD = "correct horse battery staple"
ALICE_HASH = hash_password(PASSWORD)
real_sleep = monkey.get_original("time", "sleep")
real_get_ident = monkey.get_original("_thread", "get_ident")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_userdb(**extra: UserConfig) -> UserDB:
    users = {
        "alice@example.com": UserConfig("alice@example.com", ALICE_HASH),
        "nopass@example.com": UserConfig("nopass@example.com", None),
        **extra,
    }
    return UserDB(users)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authenticator(clock: FakeClock) -> Authenticator:
    limits = Limits(max_auth_failures=3, auth_block_time=60.0)
    return Authenticator(make_userdb(), limits, clock=clock)


@pytest.fixture
def counted_verify(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace argon2 by a fast check (right password: "right"); returns the list of calls."""
    calls: list[str] = []

    def fake_verify(stored: str, password: str | bytes) -> bool:
        calls.append(stored)
        real_sleep(0.002)
        return password == "right"

    monkeypatch.setattr(passwords, "verify", fake_verify)
    return calls


# -- hashing ---------------------------------------------------------------------------------


def test_hash_is_argon2id_with_documented_parameters() -> None:
    """hash_password makes argon2id (RFC 9106 3.1) PHC strings, m=19 MiB, t=2, p=1, salted."""
    assert ALICE_HASH.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hash_password(PASSWORD) != ALICE_HASH  # a fresh random salt every time
    assert argon2.PasswordHasher().verify(ALICE_HASH, PASSWORD)
    assert not needs_rehash(ALICE_HASH)
    assert needs_rehash(argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash("x"))
    assert needs_rehash("not a hash")


# -- authenticate ----------------------------------------------------------------------------


def test_good_password_logs_in(authenticator: Authenticator) -> None:
    """The right password for a known user succeeds (RFC 4954 6: 235 2.7.0)."""
    result = authenticator.authenticate("alice@example.com", PASSWORD, "192.0.2.1")
    assert result == AuthResult(True, "alice@example.com", False, "ok")
    assert authenticator.authenticate("alice@example.com", PASSWORD.encode(), "192.0.2.1").ok


def test_username_case_insensitive(authenticator: Authenticator) -> None:
    """Usernames are addresses compared case-insensitively; the result is the canonical one."""
    result = authenticator.authenticate("ALICE@Example.COM", PASSWORD, "192.0.2.1")
    assert result.ok and result.user == "alice@example.com"


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("alice@example.com", "wrong", "bad-password"),
        ("alice@example.com", "", "bad-password"),
        ("alice@example.com", PASSWORD.upper(), "bad-password"),
        ("mallory@example.com", PASSWORD, "unknown-user"),
        ("nopass@example.com", "", "no-password"),
        ("nopass@example.com", PASSWORD, "no-password"),
        ("alice", PASSWORD, "bad-username"),
    ],
)
def test_failures(authenticator: Authenticator, username: str, password: str, reason: str) -> None:
    """Wrong password, unknown user, user without a password, bare name: all fail the same way
    to the client (RFC 4954 6: 535 5.7.8); the reason is only for the log."""
    result = authenticator.authenticate(username, password, "192.0.2.1")
    assert result == AuthResult(False, None, False, reason)


def test_malformed_stored_hash_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt hash in the config never logs anyone in and never raises; it is logged."""
    db = make_userdb(**{"eve@example.com": UserConfig("eve@example.com", "$argon2id$garbage")})
    authenticator = Authenticator(db, Limits())
    with caplog.at_level(logging.WARNING, logger="geomail.auth"):
        result = authenticator.authenticate("eve@example.com", "anything", "192.0.2.1")
    assert result == AuthResult(False, None, False, "bad-hash")
    assert "malformed-password-hash" in caplog.text


def test_reload_swaps_the_users(authenticator: Authenticator) -> None:
    """After reload (SIGHUP) the new user table decides; throttle state is kept."""
    new_hash = hash_password("new secret")
    authenticator.reload(UserDB({"alice@example.com": UserConfig("alice@example.com", new_hash)}))
    assert not authenticator.authenticate("alice@example.com", PASSWORD, "192.0.2.1").ok
    assert authenticator.authenticate("alice@example.com", "new secret", "192.0.2.1").ok


# -- cooperative and timing-safe --------------------------------------------------------------


def test_verify_runs_in_threadpool_and_hub_keeps_ticking() -> None:
    """argon2 runs in gevent's threadpool: while 10 logins verify, another greenlet's
    gevent.sleep(0.01) loop keeps running (DESIGN rule 2, nothing blocking on the hub)."""
    authenticator = Authenticator(make_userdb(), Limits(max_auth_failures=100), max_parallel=1)
    threads: set[int] = set()
    original = passwords.verify

    def recording_verify(stored: str, password: str | bytes) -> bool:
        threads.add(real_get_ident())
        return original(stored, password)

    ticks = 0
    done = False

    def ticker() -> None:
        nonlocal ticks
        while not done:
            gevent.sleep(0.01)
            ticks += 1

    ticking = gevent.spawn(ticker)
    gevent.sleep(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passwords, "verify", recording_verify)
        logins = [gevent.spawn(authenticator.authenticate, "alice@example.com", PASSWORD,
                               f"192.0.2.{i}") for i in range(10)]
        gevent.joinall(logins, raise_error=True)
    done = True
    ticking.join()
    assert all(g.value.ok for g in logins)
    assert real_get_ident() not in threads  # never on the hub's thread
    # 10 serial verifications take >= 10 x ~20 ms; a blocked hub would give 0-1 ticks.
    assert ticks >= 8, ticks


def test_unknown_user_costs_the_same_as_wrong_password() -> None:
    """An unknown user is checked against a dummy hash with the same parameters, so timing does
    not reveal which addresses exist (RFC 4954 9; chasquid does the same)."""
    authenticator = Authenticator(make_userdb(), Limits(max_auth_failures=1000))
    usernames = ("alice@example.com", "nobody@example.com", "nopass@example.com")
    times: dict[str, list[float]] = {name: [] for name in usernames}
    for i in range(12):  # interleaved, so a noisy neighbour slows all three alike
        for name in usernames:
            start = time.perf_counter()
            assert not authenticator.authenticate(name, "wrong", f"198.51.100.{i}").ok
            times[name].append(time.perf_counter() - start)
    wrong_password, unknown_user, no_password = (statistics.median(times[n][2:])
                                                 for n in usernames)
    for other in (unknown_user, no_password):
        assert 0.5 < other / wrong_password < 2.0, (wrong_password, other)
    assert wrong_password > 0.005  # really argon2, not a shortcut


# -- throttling --------------------------------------------------------------------------------


def test_blocks_after_max_failures_and_unblocks_later(
    authenticator: Authenticator, clock: FakeClock, counted_verify: list[str]
) -> None:
    """After limits.max_auth_failures failures an IP is refused for limits.auth_block_time,
    without a password check (RFC 4954 4: the server may limit attempts; 454/421 4.7.0)."""
    for _ in range(3):
        assert not authenticator.is_blocked("203.0.113.9")
        result = authenticator.authenticate("alice@example.com", "wrong", "203.0.113.9")
        assert result.reason == "bad-password"
    assert authenticator.is_blocked("203.0.113.9")
    calls = len(counted_verify)
    result = authenticator.authenticate("alice@example.com", "right", "203.0.113.9")
    assert result == AuthResult(False, None, True, "blocked")
    assert len(counted_verify) == calls  # not even verified
    assert not authenticator.is_blocked("203.0.113.10")  # others are not affected
    clock.advance(59.9)
    assert authenticator.is_blocked("203.0.113.9")
    clock.advance(0.2)
    assert not authenticator.is_blocked("203.0.113.9")
    assert authenticator.authenticate("alice@example.com", "right", "203.0.113.9").ok


def test_failures_outside_the_window_are_forgotten(
    authenticator: Authenticator, clock: FakeClock, counted_verify: list[str]
) -> None:
    """Only failures within the window (auth_block_time) count towards a block."""
    for _ in range(2):
        authenticator.authenticate("alice@example.com", "wrong", "203.0.113.9")
    clock.advance(61)
    for _ in range(2):
        authenticator.authenticate("alice@example.com", "wrong", "203.0.113.9")
    assert not authenticator.is_blocked("203.0.113.9")
    authenticator.authenticate("alice@example.com", "wrong", "203.0.113.9")
    assert authenticator.is_blocked("203.0.113.9")


def test_success_clears_only_that_ips_failures(
    authenticator: Authenticator, counted_verify: list[str]
) -> None:
    """A good login resets its own IP's failure count, not anybody else's."""
    for ip in ("192.0.2.1", "192.0.2.2"):
        for _ in range(2):
            authenticator.authenticate("alice@example.com", "wrong", ip)
    assert authenticator.authenticate("alice@example.com", "right", "192.0.2.1").ok
    for _ in range(2):
        authenticator.authenticate("alice@example.com", "wrong", "192.0.2.1")
    assert not authenticator.is_blocked("192.0.2.1")
    authenticator.authenticate("alice@example.com", "wrong", "192.0.2.2")
    assert authenticator.is_blocked("192.0.2.2")


def test_ipv6_throttled_per_64_and_mapped_ipv4(
    authenticator: Authenticator, counted_verify: list[str]
) -> None:
    """IPv6 clients are counted per /64 (one host's usual share); ::ffff:a.b.c.d is IPv4."""
    for i in range(3):
        authenticator.authenticate("alice@example.com", "wrong", f"2001:db8:1:2::{i + 1}")
    assert authenticator.is_blocked("2001:db8:1:2:ffff::1")
    assert not authenticator.is_blocked("2001:db8:1:3::1")
    for _ in range(3):
        authenticator.authenticate("alice@example.com", "wrong", "::ffff:198.51.100.7")
    assert authenticator.is_blocked("198.51.100.7")


def test_parallel_guesses_get_no_more_than_the_limit_verified(
    authenticator: Authenticator, counted_verify: list[str]
) -> None:
    """Many connections guessing at once from one IP get max_auth_failures checks in total."""
    guesses = [gevent.spawn(authenticator.authenticate, "alice@example.com", f"guess{i}",
                            "203.0.113.50") for i in range(20)]
    gevent.joinall(guesses, raise_error=True)
    results = [g.value for g in guesses]
    assert len(counted_verify) == 3
    assert sum(r.reason == "bad-password" for r in results) == 3
    assert sum(r.blocked for r in results) == 17


def test_parallel_logins_from_one_ip_all_succeed(
    authenticator: Authenticator, counted_verify: list[str]
) -> None:
    """Good logins from one address (a NAT, a mail program with several connections) may run
    in parallel: waiting for a free slot is not a failure."""
    logins = [gevent.spawn(authenticator.authenticate, "alice@example.com", "right",
                           "192.0.2.80") for _ in range(12)]
    gevent.joinall(logins, raise_error=True)
    assert all(g.value.ok for g in logins)


def test_throttle_table_is_bounded(clock: FakeClock, counted_verify: list[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-IP table never exceeds max_tracked entries, and idle entries are pruned."""
    monkeypatch.setattr(throttle, "_PRUNE_EVERY", 50)
    authenticator = Authenticator(make_userdb(), Limits(max_auth_failures=3,
                                                        auth_block_time=60.0),
                                  clock=clock, max_tracked=100)
    for i in range(1000):
        authenticator.authenticate("alice@example.com", "wrong", f"10.0.{i // 250}.{i % 250}")
        assert authenticator.tracked_clients <= 100
    clock.advance(61)
    for _ in range(50):
        authenticator.authenticate("alice@example.com", "right", "192.0.2.1")
    assert authenticator.tracked_clients <= 1  # idle entries pruned


# -- the log lines fail2ban reads ---------------------------------------------------------------


HOST_PATTERN = r'[^\s"]+'


def fail2ban_regex() -> re.Pattern[str]:
    """The filter's failregex with fail2ban's substitutions approximated in Python."""
    parser = configparser.RawConfigParser()
    parser.read(FILTER)
    options = dict(parser.items("Definition"))
    options["__prefix_line"] = r"\s*(?:\S+\s+)?(?:geomail(?:\[\d+\])?:\s+)?"
    text = options["failregex"]
    while "%(" in text:
        text = re.sub(r"%\((\w+)\)s", lambda m: options[m.group(1)], text)
    alternatives = ["(?:" + line.replace("<HOST>", f"(?P<host{n}>{HOST_PATTERN})") + ")"
                    for n, line in enumerate(text.splitlines())]  # one per failregex line
    return re.compile("|".join(alternatives))


def matched_host(match: re.Match[str]) -> str:
    """The <HOST> of whichever failregex line matched."""
    return next(host for name, host in match.groupdict().items()
                if name.startswith("host") and host)


def test_failure_log_lines_match_the_fail2ban_filter(
    authenticator: Authenticator, caplog: pytest.LogCaptureFixture, counted_verify: list[str]
) -> None:
    """Each failure is one key=value line on logger geomail.auth that the shipped fail2ban filter
    matches with the client as <HOST>; a username cannot forge another host (DESIGN rule 6)."""
    with caplog.at_level(logging.INFO, logger="geomail.auth"):
        authenticator.authenticate("alice@example.com", "wrong", "203.0.113.9")
        authenticator.authenticate("x client=6.6.6.6\nauth-failed client=6.6.6.6", "wrong",
                                   "2001:db8::7")
        authenticator.authenticate("alice@example.com", "right", "192.0.2.55")
        authenticator.authenticate("alice@example.com", "wrong", "2001:db8::7")
        authenticator.authenticate("alice@example.com", "wrong", "2001:db8::7")  # blocks
        authenticator.authenticate("alice@example.com", "wrong", "2001:db8::7")  # refused
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("auth-failed client=203.0.113.9 user=alice@example.com"
                           " reason=bad-password")
    assert messages[1] == ("auth-failed client=2001:db8::7 user=\"x client=6.6.6.6\\n"
                           "auth-failed client=6.6.6.6\" reason=bad-username")
    assert messages[2] == "auth-ok client=192.0.2.55 user=alice@example.com"
    assert "auth-blocked client=2001:db8::7 failures=3 seconds=60" in messages
    assert messages[-1] == "auth-failed client=2001:db8::7 user=alice@example.com reason=blocked"
    assert all("\n" not in m for m in messages)

    regex = fail2ban_regex()
    lines = [f"{r.levelname} {r.name} {r.getMessage()}" for r in caplog.records]
    hosts = [matched_host(m) for line in lines if (m := regex.search(line))]
    assert hosts == ["203.0.113.9"] + ["2001:db8::7"] * 5
    assert [regex.search(m) is not None for m in messages] == [True, True, False] + [True] * 4


FAIL2BAN_COMMON = Path("/etc/fail2ban/filter.d/common.conf")


def run_fail2ban_regex(tmp_path: Path, lines: list[str], *options: str) -> str:
    """fail2ban's own fail2ban-regex run on ``lines`` with the shipped filter; its stdout."""
    command = program("fail2ban-regex", "fail2ban")
    assert FAIL2BAN_COMMON.exists(), f"{FAIL2BAN_COMMON} is missing (apt-get install fail2ban)"
    filters = tmp_path / "filter.d"
    filters.mkdir(exist_ok=True)
    shutil.copy(FAIL2BAN_COMMON, filters)  # the filter includes it from its own directory
    shutil.copy(FILTER, filters)
    log = tmp_path / "geomail.log"
    log.write_text("".join(f"{line}\n" for line in lines))
    return subprocess.run([command, *options, str(log), str(filters / "geomail.conf")],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def test_fail2ban_regex_tool_accepts_the_filter(tmp_path: Path) -> None:
    """fail2ban-regex itself finds the hosts of hand-written lines (Python's default logging
    format, a syslog prefix), and none forged by clients (conf/fail2ban/filter.d/geomail.conf)."""
    out = run_fail2ban_regex(tmp_path, [
        "2026-05-09 12:00:01,123 WARNING geomail.auth auth-failed client=203.0.113.9"
        " user=alice@example.com reason=bad-password",
        "2026-05-09 12:00:02,123 WARNING geomail.auth auth-blocked client=203.0.113.9"
        " failures=5 seconds=900",
        "May  9 12:00:03 mx geomail[1234]: WARNING geomail.auth auth-failed client=2001:db8::7"
        " user=x\\x20client\\x3d6.6.6.6 reason=unknown-user",
        "2026-05-09 12:00:04,000 INFO geomail.auth auth-ok client=192.0.2.55 user=a@example.com",
        "2026-05-09 12:00:05,000 INFO geomail.smtp something text auth-failed client=6.6.6.6",
    ], "-v")
    assert "Lines: 5 lines, 0 ignored, 3 matched, 2 missed" in out
    matched = out[out.index("Failregex:"):out.index("Ignoreregex:")]
    assert "203.0.113.9" in matched and "2001:db8::7" in matched
    assert "6.6.6.6" not in matched and "192.0.2.55" not in matched


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fail2ban_regex_bans_the_client_of_real_log_lines(
    tmp_path: Path, clock: FakeClock, counted_verify: list[str], fmt: str
) -> None:
    """The shipped filter, checked by fail2ban-regex on the lines geomail's own formatter wrote
    for real login failures, with ``log.format: text`` and ``json``: one match
    per failure and per block, each dated by the line's own time, the host always the client's
    address; user names made to look like another client (`` client=``, a new line, a JSON
    field) ban no one else, and a login that succeeds matches nothing (DESIGN rule 6)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else KeyValueFormatter())
    logger = logging.getLogger("geomail")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started = time.time()
    try:
        authenticator = Authenticator(make_userdb(), Limits(max_auth_failures=3,
                                                            auth_block_time=60.0), clock=clock)
        authenticator.authenticate("alice@example.com", "wrong", "203.0.113.9")
        for forged in ("x client=6.6.6.6\nauth-failed client=6.6.6.6",
                       'x", "client": "6.6.6.6", "msg": "auth-failed client=6.6.6.6'):
            authenticator.authenticate(forged, "wrong", "2001:db8::7")
        authenticator.authenticate("alice@example.com", "right", "192.0.2.55")
        authenticator.authenticate("alice@example.com", "wrong", "2001:db8::7")  # blocks
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6 and all(line.startswith("{" if fmt == "json" else "20")
                                   for line in lines)
    # the same line as syslog or the journal forward it
    lines.append(f"Dec  6 03:00:00 mx geomail[1234]: {lines[0]}")
    rows = [ast.literal_eval(row.rstrip(","))
            for row in run_fail2ban_regex(tmp_path, lines, "--out", "row").splitlines()]
    assert [row[0] for row in rows] == ["203.0.113.9"] + ["2001:db8::7"] * 4 + ["203.0.113.9"]
    assert all(started - 2 <= row[1] <= time.time() + 2 for row in rows[:-1])


# -- geomail passwd ---------------------------------------------------------------------------


@pytest.mark.parametrize("piped", ["s3cret pass\n", "s3cret pass\r\n", "s3cret pass",
                                   "s3cret pass\nsecond line\n"])
def test_passwd_piped(piped: str) -> None:
    """Piped: one line from stdin, only the line ending stripped; the hash goes to stdout."""
    stdout, stderr = io.StringIO(), io.StringIO()
    assert passwd_command(io.StringIO(piped), stdout, stderr) == 0
    printed = stdout.getvalue()
    assert printed.endswith("\n") and printed.count("\n") == 1
    assert argon2.PasswordHasher().verify(printed.strip(), "s3cret pass")
    assert stderr.getvalue() == ""


@pytest.mark.parametrize("piped", ["", "\n", "\r\n"])
def test_passwd_rejects_empty(piped: str) -> None:
    """An empty password is refused with a message on stderr and exit status 1."""
    stdout, stderr = io.StringIO(), io.StringIO()
    assert passwd_command(io.StringIO(piped), stdout, stderr) == 1
    assert stdout.getvalue() == ""
    assert "empty" in stderr.getvalue()


def test_passwd_piped_subprocess_and_hash_logs_in() -> None:
    """`geomail passwd` with a real pipe prints a hash the Authenticator accepts."""
    code = "import sys; from geomail.passwords import passwd_command; sys.exit(passwd_command())"
    proc = subprocess.run([sys.executable, "-c", code], input=b"p1ped secret\n",
                          capture_output=True, timeout=60, check=True)
    password_hash = proc.stdout.decode().strip()
    users = UserDB({"bob@example.com": UserConfig("bob@example.com", password_hash)})
    assert Authenticator(users, Limits()).authenticate("bob@example.com", "p1ped secret",
                                                       "127.0.0.1").ok


def _read_until(fd: int, wanted: bytes, deadline: float) -> bytes:
    data = b""
    while wanted not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"timed out waiting for {wanted!r}; got {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            if wanted == b"":
                return data
            raise AssertionError(f"EOF before {wanted!r}; got {data!r}")
        data += chunk
    return data


def run_passwd_on_pty(*typed: bytes) -> tuple[int, bytes]:
    """Run `geomail passwd` on a pseudo-terminal, answering each prompt with ``typed``."""
    code = "import sys; from geomail.passwords import passwd_command; sys.exit(passwd_command())"
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal, so getpass uses it
        os.execv(sys.executable, [sys.executable, "-c", code])
    output = b""
    deadline = time.monotonic() + 60
    try:
        for prompt, answer in zip((b"Password: ", b"Repeat password: "), typed, strict=False):
            output += _read_until(fd, prompt, deadline)
            os.write(fd, answer)
        while True:
            try:
                ready = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]
                chunk = os.read(fd, 4096) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_passwd_on_terminal_asks_twice_without_echo() -> None:
    """On a terminal `geomail passwd` prompts twice, echoes nothing, prints a working hash."""
    status, output = run_passwd_on_pty(b"Tr0ub4dor&3\n", b"Tr0ub4dor&3\n")
    assert status == 0, output
    assert b"Tr0ub4dor" not in output  # no echo
    match = re.search(rb"\$argon2id\$\S+", output)
    assert match, output
    users = UserDB({"bob@example.com": UserConfig("bob@example.com", match.group().decode())})
    assert Authenticator(users, Limits()).authenticate("bob@example.com", "Tr0ub4dor&3",
                                                       "127.0.0.1").ok


def test_passwd_on_terminal_mismatch() -> None:
    """Two different passwords typed: an error and exit status 1, no hash printed."""
    status, output = run_passwd_on_pty(b"first one\n", b"second one\n")
    assert status == 1
    assert b"do not match" in output
    assert b"$argon2" not in output


def test_auth_result_is_frozen() -> None:
    """AuthResult is an immutable value."""
    result = AuthResult(True, "alice@example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]

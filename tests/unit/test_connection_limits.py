"""Connection budgets and client networks (RFC 5321 4.2.3), without sockets: the tracker's
arithmetic, the client-network key, the ``limits`` keys and the login throttle's key."""

from __future__ import annotations

from typing import Any

import pytest

from geomail.clientnet import client_network
from geomail.config import ConfigError, Limits, UserConfig, parse_config
from geomail.login import Authenticator
from geomail.server.listener import ConnectionBudget, ConnectionTracker, Refusal
from geomail.userdb import UserDB


def _config(**limits: Any) -> Any:
    return parse_config({"hostname": "mx.example.com", "domains": ["example.com"],
                         "data_dir": "/srv/geomail", "listen": {"smtp": ["127.0.0.1:25"]},
                         "limits": limits})


@pytest.mark.parametrize(("ip", "v4", "v6", "key"), [
    ("192.0.2.7", 32, 64, "192.0.2.7"),
    ("192.0.2.7", 24, 64, "192.0.2.0/24"),
    ("::ffff:192.0.2.7", 32, 64, "192.0.2.7"),  # IPv4 on a dual-stack socket
    ("2001:db8:1:2:aaaa::1", 32, 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:aaaa::1", 32, 48, "2001:db8:1::/48"),
    ("2001:db8:1:2:aaaa::1", 32, 128, "2001:db8:1:2:aaaa::1/128"),
    ("fe80::1%eth0", 32, 64, "fe80::/64"),
    ("not-an-address", 32, 64, "not-an-address"),
])
def test_client_network(ip, v4, v6, key):
    """RFC 6177 (a site gets a /64 or more): IPv4 clients count per address
    (or per configured prefix), IPv6 ones per /64 (configurable); mapped IPv4 is IPv4."""
    assert client_network(ip, ipv4_prefix=v4, ipv6_prefix=v6) == key


def test_budget_counts_per_client_network_and_in_total():
    """RFC 5321 4.2.3 (421 when over): per client network, then in total; a
    release gives the slot back; addresses of one /64 share one count."""
    budget = ConnectionBudget(3, 2, client_network, ("max_connections", "max_connections_per_ip"))
    a1, a2, a3 = (budget.network(f"2001:db8::{n}") for n in (1, 2, 3))
    assert budget.admit(a1) is None
    assert budget.admit(a2) is None
    assert budget.admit(a3) == Refusal("too-many-from-ip", "limits.max_connections_per_ip")
    assert budget.admit(budget.network("2001:db8:0:1::1")) is None
    assert budget.admit("192.0.2.1") == Refusal("too-many-connections", "limits.max_connections")
    budget.release(a1)
    assert budget.total == 2
    assert budget.admit(a3) is None
    assert budget.accepted == 4


def test_tracker_budgets_are_independent():
    """Postfix's separate submission service: a full port-25 budget leaves the users' budget
    untouched; the tracker reports the total over both (metrics, drain)."""
    mx = ConnectionBudget(1, 1)
    users = ConnectionBudget(1, 1, keys=("max_user_connections", "max_user_connections_per_ip"))
    tracker = ConnectionTracker([mx, users])
    assert mx.admit("192.0.2.1") is None
    assert mx.admit("192.0.2.2") is not None
    assert users.admit("192.0.2.1") is None
    assert users.admit("192.0.2.1") == Refusal("too-many-connections",
                                               "limits.max_user_connections")
    assert tracker.total == 2
    assert tracker.accepted == 2


def test_limits_keys_and_their_defaults():
    """``limits.max_user_connections`` (default 200) and its per-IP limit, which
    follows ``max_connections_per_ip`` unless set, so existing configs keep their per-IP
    bound; ``ipv4_prefix`` 32 and ``ipv6_prefix`` 64 by default."""
    limits = _config().limits
    assert (limits.max_connections, limits.max_connections_per_ip) == (2000, 20)
    assert (limits.max_user_connections, limits.max_user_connections_per_ip) == (200, 20)
    assert (limits.ipv4_prefix, limits.ipv6_prefix) == (32, 64)
    assert _config(max_connections_per_ip=7).limits.max_user_connections_per_ip == 7
    set_both = _config(max_connections_per_ip=7, max_user_connections_per_ip=3).limits
    assert (set_both.max_connections_per_ip, set_both.max_user_connections_per_ip) == (7, 3)
    assert _config(max_user_connections=5, ipv6_prefix=56, ipv4_prefix=24).limits == Limits(
        max_user_connections=5, ipv6_prefix=56, ipv4_prefix=24)


@pytest.mark.parametrize(("key", "value"), [
    ("max_user_connections", 0), ("max_user_connections_per_ip", -1), ("ipv6_prefix", 129),
    ("ipv6_prefix", 8), ("ipv4_prefix", 33), ("ipv4_prefix", "24"),
])
def test_limits_key_errors_name_the_key(key, value):
    """Config errors name their key path (README: configuration reference)."""
    with pytest.raises(ConfigError) as info:
        _config(**{key: value})
    assert [p.split(":")[0] for p in info.value.problems] == [f"limits.{key}"]


def test_login_throttle_uses_the_configured_ipv6_prefix():
    """RFC 6177 (one notion of "a client"): with ``ipv6_prefix: 48`` failed logins from
    two /64s of one /48 add up and block the /48; another /48 is not blocked."""
    users = UserDB({"alice@example.com": UserConfig("alice@example.com", None)})
    authenticator = Authenticator(users, Limits(max_auth_failures=2, ipv6_prefix=48),
                                  max_parallel=1)
    authenticator.authenticate("nobody@example.com", "x", "2001:db8:1:1::1")
    authenticator.authenticate("nobody@example.com", "x", "2001:db8:1:2::1")
    assert authenticator.is_blocked("2001:db8:1:ffff::9")
    assert not authenticator.is_blocked("2001:db8:2::1")


def test_app_budget_of_each_listener_kind(tmp_path):
    """listen.smtp admits against ``max_connections``; submission,
    submissions, pop3 and pop3s against ``max_user_connections``; the pool holds both."""
    from geomail.app import App

    config = parse_config({
        "hostname": "mx.example.com", "domains": ["example.com"], "data_dir": str(tmp_path),
        "listen": {"smtp": ["127.0.0.1:0"], "pop3": [{"address": "127.0.0.1:0",
                                                      "allow_plaintext_auth": True}]},
        "limits": {"max_connections": 30, "max_user_connections": 7},
    })
    app = App(config)
    by_kind = {lst.config.kind: lst._budget.max_total for lst in app.listeners}
    assert by_kind == {"smtp": 30, "pop3": 7}
    assert app.pool.size >= 37

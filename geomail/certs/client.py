"""The ACME client (RFC 8555) over certbot's ``acme`` library: account, order, http-01, finalize.

The library is blocking (requests, ``time.sleep`` while polling). Each of its calls runs in a
thread of the manager's own (``runner``); the orchestration runs in a greenlet on the hub, so
the ``ChallengeStore`` (hub-only) is written from the hub between those calls, and the hub
never waits on the CA.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from acme import challenges, crypto_util, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwk import JWK, JWKRSA

from geomail.certs.store import acme_dir, ensure_dir, new_key_pem
from geomail.config import ACMEConfig
from geomail.safeio import write_atomic
from geomail.web.challenges import ChallengeStore

Runner = Callable[..., Any]
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
USER_AGENT = "geomail"


class AcmeFailure(Exception):
    """An order failed; ``retry_after`` (seconds) when the CA said when to come back."""

    def __init__(self, reason: str, retry_after: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class _Network(acme_client.ClientNetwork):
    """Remembers the last response's Retry-After (RFC 8555 6.6: rate limits), which the
    library's error objects do not carry."""

    last_retry_after: str | None = None

    def _send_request(self, method: str, url: str, *args: Any,
                      **kwargs: Any) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_retry_after = response.headers.get("Retry-After")
        return response


@dataclass
class _Session:
    client: acme_client.ClientV2
    net: _Network


def _retry_seconds(header: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date, RFC 9110 10.2.3)."""
    if not header:
        return None
    try:
        return max(0.0, float(int(header)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - datetime.datetime.now(datetime.UTC).timestamp())


class AcmeClient:
    """One account at one directory; ``obtain`` runs an order to its certificate."""

    def __init__(self, config: ACMEConfig, data_dir: str, runner: Runner) -> None:
        self.config = config
        self.data_dir = data_dir
        self.run = runner
        self._session: _Session | None = None
        self._register_again = False  # the CA no longer knows the stored account

    @property
    def account_path(self) -> str:
        return os.path.join(acme_dir(self.data_dir), "account.json")

    # ---- blocking parts (in the runner's thread) --------------------------------------------

    def _connect(self) -> _Session:
        """Directory, then the stored account, else a new one (RFC 8555 7.1.1, 7.3)."""
        stored: dict[str, Any] = {}
        try:
            with open(self.account_path, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError):
            stored = {}
        if stored.get("key"):
            key = JWK.json_loads(json.dumps(stored["key"]))
        else:
            key = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        net = _Network(key, user_agent=USER_AGENT)
        # requests takes a CA bundle path where the library's annotation says bool.
        net.verify_ssl = self.config.ca_file or True  # type: ignore[assignment]
        directory = acme_client.ClientV2.get_directory(self.config.directory, net)
        client = acme_client.ClientV2(directory, net)
        if (stored.get("directory") == self.config.directory and stored.get("regr")
                and not self._register_again):
            net.account = messages.RegistrationResource.json_loads(json.dumps(stored["regr"]))
            return _Session(client, net)
        registration = messages.NewRegistration.from_data(
            email=self.config.email, terms_of_service_agreed=True)
        try:
            regr = client.new_account(registration)
        except acme_errors.ConflictError as exc:  # the key already has an account (7.3.1)
            regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            net.account = regr
        ensure_dir(acme_dir(self.data_dir))
        write_atomic(self.account_path, json.dumps({
            "directory": self.config.directory, "email": self.config.email,
            "key": key.to_json(), "regr": regr.to_json()}).encode(), mode=0o600)
        self._register_again = False
        return _Session(client, net)

    # ---- on the hub --------------------------------------------------------------------------

    def obtain(self, names: list[str], store: ChallengeStore,
               timeout: float = 90.0) -> tuple[bytes, bytes]:
        """``(fullchain_pem, key_pem)`` for ``names``: new order (7.4), http-01 responses
        served from ``store`` while the CA validates (8.3), poll, finalize, download (7.4.2).
        Raises AcmeFailure."""
        try:
            return self._obtain_once(names, store, timeout)
        except AcmeFailure:
            if not self._register_again:
                raise
        # The CA forgot our account: register again (same key) and order once more now,
        # rather than backing off on an error that registering fixes.
        return self._obtain_once(names, store, timeout)

    def _obtain_once(self, names: list[str], store: ChallengeStore,
                     timeout: float) -> tuple[bytes, bytes]:
        session = self._session
        tokens: list[str] = []
        try:
            if session is None:
                session = self._session = self.run(self._connect)
            key_pem: bytes = self.run(new_key_pem)
            csr = self.run(crypto_util.make_csr, key_pem, names)
            order = self.run(session.client.new_order, csr)
            answers = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # reused authorization (7.1.4)
                challb = next((c for c in authz.body.challenges
                               if isinstance(c.chall, challenges.HTTP01)), None)
                if challb is None:
                    raise AcmeFailure(f"no http-01 challenge offered for "
                                      f"{authz.body.identifier.value}")
                response, validation = challb.response_and_validation(session.net.key)
                store.put(challb.chall.encode("token"), validation)
                tokens.append(challb.chall.encode("token"))
                answers.append((challb, response))
            for challb, response in answers:
                self.run(session.client.answer_challenge, challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
            order = self.run(session.client.poll_and_finalize, order, deadline)
        except AcmeFailure:
            raise
        except messages.Error as exc:
            if exc.code in ("unauthorized", "accountDoesNotExist"):
                self._session = None  # connect (and look the account up) again next time
                # A CA that forgot the account (a reset staging CA, a deactivation) answers
                # every order so until a new one is registered (RFC 8555 7.3).
                self._register_again = exc.code == "accountDoesNotExist"
            limited = exc.typ == RATE_LIMITED
            retry = _retry_seconds(session.net.last_retry_after) if session else None
            raise AcmeFailure(f"{exc.typ}: {exc.detail or ''}".strip(), retry, limited) from exc
        except acme_errors.ValidationError as exc:
            problems = [f"{a.body.identifier.value}: {_challenge_error(a)}"
                        for a in exc.failed_authzrs]
            raise AcmeFailure("validation failed: " + "; ".join(problems)) from exc
        except acme_errors.TimeoutError as exc:
            raise AcmeFailure("timed out waiting for the CA") from exc
        except (acme_errors.Error, requests.RequestException, OSError, ValueError) as exc:
            self._session = None  # reconnect next time (directory, nonces)
            raise AcmeFailure(f"{type(exc).__name__}: {exc}") from exc
        finally:
            for token in tokens:
                store.remove(token)
            if session is not None:
                # Orders are hours apart: drop the pooled connections, in the thread whose
                # hub owns their sockets.
                self.run(session.net.session.close)
        if not order.fullchain_pem:
            raise AcmeFailure("the CA returned no certificate")
        return order.fullchain_pem.encode(), key_pem


def _challenge_error(authz: messages.AuthorizationResource) -> str:
    for challb in authz.body.challenges:
        if challb.error is not None:
            return str(challb.error.detail or challb.error.typ)
    return str(authz.body.status)

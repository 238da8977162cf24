"""Smoke: STARTTLS, implicit TLS and AUTH work end to end (details in the conformance suites)."""

import poplib
import smtplib

from tests.support.geomail import PASSWORD


def test_submission_starttls_auth_delivers(tls_app, client_tls):
    """RFC 3207 + RFC 4954 + RFC 6409: STARTTLS, EHLO again, AUTH PLAIN, mail arrives."""
    port = tls_app.ports["submission"][0]
    with smtplib.SMTP("localhost", port) as client:
        client.ehlo()
        assert "auth" not in client.esmtp_features
        client.starttls(context=client_tls)
        client.ehlo()
        assert "auth" in client.esmtp_features
        client.login("alice@example.com", PASSWORD)
        message = b"Subject: hi\r\n\r\nyo\r\n"
        refused = client.sendmail("alice@example.com", ["bob@example.com"], message)
        assert refused == {}
    pop = poplib.POP3_SSL("localhost", tls_app.ports["pop3s"][0], context=client_tls)
    pop.user("bob@example.com")
    pop.pass_(PASSWORD)
    count, _ = pop.stat()
    lines = pop.retr(1)[1]
    pop.quit()
    assert count == 1
    assert b"Subject: hi" in lines
    assert any(b"with ESMTPSA" in line for line in lines)

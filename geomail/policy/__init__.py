"""The policies the protocol sessions call: who may send, log in and fetch (SMTP, POP3)."""

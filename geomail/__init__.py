"""geomail: a single-binary gevent mail server (SMTP in and out, POP3, Maildir/mbox)."""

__version__ = "0.1.0"

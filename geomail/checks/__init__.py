"""Checks of inbound mail: sender authentication (SPF, DKIM, ARC, DMARC, iprev), spam
defences (rspamd, DNS lists, greylisting)."""

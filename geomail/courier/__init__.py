"""Outbound delivery: MX lookup, the SMTP client, and local delivery into the store."""

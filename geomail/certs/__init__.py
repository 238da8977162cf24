"""Certificates obtained and renewed with ACME (RFC 8555): store, client and manager."""

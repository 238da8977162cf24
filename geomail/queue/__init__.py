"""The durable outbound queue: items on disk, send loops with retries, bounces (RFC 3464)."""

"""Network services: listeners and the gevent I/O shells around the sans-IO sessions."""

"""Sans-IO protocol code: parsing, state machines and replies; no sockets, no gevent, no clock."""

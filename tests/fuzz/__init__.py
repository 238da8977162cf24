"""Hypothesis property tests: the protocol parsers against hostile input (issue 10 item 17)."""

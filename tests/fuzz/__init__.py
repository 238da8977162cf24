"""Hypothesis property tests: the protocol parsers against hostile input."""

"""Hypothesis profiles for the fuzz tests.

- ``fast`` (the default, used by ``make test``): 200 examples per test, derandomized, so CI
  runs the same inputs every time and a failure reproduces; no example database on disk.
- ``long`` (``HYPOTHESIS_PROFILE=long``, used by ``make fuzz``): 20,000 examples per test (or
  ``FUZZ_EXAMPLES``), random, with the example database in ``.hypothesis/`` (git-ignored) so that
  a failure found once is tried first the next time.

A failing run prints the falsifying example and a ``@reproduce_failure`` blob to paste above the
test (and, when random, the seed: ``pytest --hypothesis-seed=N``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_COMMON = {
    "deadline": None,  # a shared 2-core machine: timing is not what these tests check
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.large_base_example],
}

settings.register_profile("fast", max_examples=200, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
                          database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
                          **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

"""The fuzzing budget: a few hundred examples per target in the default test run (seconds each,
derandomized so CI is repeatable), many more with fresh randomness in ``make soak``.

    FUZZ_EXAMPLES=20000 FUZZ_RANDOM=1 pytest tests/fuzz
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
RANDOM = os.environ.get("FUZZ_RANDOM", "") == "1"

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded CI machine must not turn slowness into a finding
    database=None,  # no .hypothesis directory in the tree; findings become regression tests
    derandomize=not RANDOM,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)

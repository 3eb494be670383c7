"""What the fuzz tests share: the budget, and a quiet logger.

The budget is small, fixed and reproducible in CI, and as large as wanted locally.

Every fuzz test takes its settings from ``budget(n)``: ``n`` examples, derandomized (the same
examples on every CI run), no example database. Set ``LEVIBOT_FUZZ_EXAMPLES=N`` to run ``N``
examples per test instead, with a fresh random seed each run; a failure prints the blob that
reproduces it (``@reproduce_failure``).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

ENV = "LEVIBOT_FUZZ_EXAMPLES"


def budget(ci_examples: int) -> settings:
    """Return the hypothesis settings of a fuzz test whose CI budget is ``ci_examples``."""
    local = os.environ.get(ENV, "").strip()
    return settings(
        max_examples=int(local) if local else ci_examples,
        derandomize=not local,
        deadline=None,  # examples are timed by the package budget, not one by one
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class RecordingLog:
    """A logger that keeps the event names it was given (the console one is slow at this rate)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.records: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        """Record ``event`` and its fields."""
        self.events.append(event)
        self.records.append((event, kw))

    info = debug = error = warning

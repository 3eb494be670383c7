"""A plugin actor whose metrics are the edge cases of the Prometheus text format.

A label value with a quote, a backslash and a newline, a HELP text with a backslash and a
newline, a counter past six significant digits and a float that ``:g`` would round. Loaded by
nodes through ``[node] plugins = ["tests.odd_metrics"]``.
"""

from __future__ import annotations

import math

from levibot.config import Config
from levibot.registry import register
from levibot.runtime import Actor

#: The awkward label value: every character the exposition format escapes.
ODD_LABEL = 'say "hi"\\path\nnext line'
BIG_COUNT = 1_234_567
RATIO = 0.1 + 0.2  # 0.30000000000000004: ``:g`` prints 0.3


class OddMetrics(Actor[Config]):
    """Registers its metrics at start, twice, as a restarted actor would."""

    name = "odd_metrics"

    async def on_start(self) -> None:
        m = self.ctx.metrics
        for _ in range(2):  # the second registration must return the same series
            counter = m.counter(
                "test_odd_events_total",
                "Events with a \\ and a\nnewline in the help",
                where=ODD_LABEL,
            )
            m.gauge("test_odd_ratio", "A float that needs 17 digits", fn=lambda: RATIO)
            m.gauge("test_odd_special", "Infinity", kind="pos").set(math.inf)
            m.gauge("test_odd_special", "Infinity", kind="neg").set(-math.inf)
            m.gauge("test_odd_special", "Infinity", kind="nan").set(math.nan)
        counter.inc(BIG_COUNT)


register(OddMetrics.name, f"{__name__}:OddMetrics")

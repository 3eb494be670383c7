"""The one backoff: doubling from the initial wait, capped, jittered in [d/2, d], resettable."""

from __future__ import annotations

import random

from levibot.backoff import Backoff, delay


def test_plain_waits_double_up_to_the_cap_and_reset() -> None:
    b = Backoff(0.25, 2.0, jitter=False)
    assert [b.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert b.peek() == 2.0
    b.reset()
    assert b.next() == 0.25


def test_jittered_waits_stay_within_half_and_the_whole_ceiling() -> None:
    rng = random.Random(3)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        wait = delay(attempt, 0.5, 30.0, rng=rng)
        assert ceiling / 2 <= wait <= ceiling


def test_huge_attempt_counts_neither_overflow_nor_pass_the_cap() -> None:
    assert delay(10_000, 1.0, 60.0, jitter=False) == 60.0
    assert delay(-3, 1.0, 60.0, jitter=False) == 1.0

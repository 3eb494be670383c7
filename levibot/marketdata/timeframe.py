"""Timeframes: ``"1s"``, ``"5s"``, ``"1m"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"1w"`` ↔ nanoseconds.

Buckets are aligned to the Unix epoch, exactly like PostgreSQL's
``date_bin(interval, ts, '1970-01-01 00:00:00+00')``: a bucket starts at the largest multiple of
the interval not after the timestamp (floor division, so times before 1970 work too).
"""

from __future__ import annotations

import re

from levibot.errors import LevibotError

_UNITS_NS: dict[str, int] = {
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3_600 * 1_000_000_000,
    "d": 86_400 * 1_000_000_000,
    "w": 7 * 86_400 * 1_000_000_000,
}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


class TimeframeError(LevibotError, ValueError):
    """A timeframe string is not of the form ``<positive int><ms|s|m|h|d|w>``."""


def parse_timeframe(text: str) -> int:
    """Return the length of timeframe ``text`` (``"5s"``, ``"1h"``) in nanoseconds."""
    match = _PATTERN.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise TimeframeError(
            f"invalid timeframe {text!r}: expected a positive integer and a unit "
            "(ms, s, m, h, d, w), e.g. '1s', '5s', '1m', '1h', '1d'"
        )
    return int(match.group(1)) * _UNITS_NS[match.group(2)]


def format_timeframe(interval_ns: int) -> str:
    """Return the shortest timeframe string for ``interval_ns`` (``3_600e9`` → ``"1h"``)."""
    if interval_ns <= 0:
        raise TimeframeError(f"invalid interval {interval_ns} ns: must be positive")
    for unit in ("w", "d", "h", "m", "s", "ms"):
        size = _UNITS_NS[unit]
        if interval_ns % size == 0:
            return f"{interval_ns // size}{unit}"
    return f"{interval_ns}ns"


def bucket_start(ts_ns: int, interval_ns: int) -> int:
    """Return the start of the epoch-aligned bucket of length ``interval_ns`` holding ``ts_ns``."""
    return ts_ns - ts_ns % interval_ns

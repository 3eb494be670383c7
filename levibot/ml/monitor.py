"""Watching a served model: input drift, shadow comparison and canary routing."""

from __future__ import annotations

import zlib

import numpy as np

from levibot.ml.card import ModelCard


class DriftMonitor:
    """Counts rows with any input outside the training range (widened by a tolerance) over a
    sliding window of rows; ``update`` returns True once when the out-of-range fraction rises
    above ``max_fraction`` (and re-arms when it falls back below half of it)."""

    def __init__(
        self, card: ModelCard, *, tolerance: float, window: int, max_fraction: float
    ) -> None:
        lows, highs = card.bounds(tolerance)
        self.low = np.asarray(lows)
        self.high = np.asarray(highs)
        self.window = max(1, window)
        self.max_fraction = max_fraction
        self._buf = np.zeros(self.window, bool)
        self._pos = 0
        self._count = 0
        self._bad = 0  # flagged rows in the window (``_buf``'s unwritten slots are False)
        self.alerting = False
        self.worst: str = ""  # name of the feature most often out of range in the last update

    @property
    def fraction(self) -> float:
        """Return the out-of-range fraction of the rows in the window."""
        return self._bad / self._count if self._count else 0.0

    def out_of_range(self, x: np.ndarray) -> np.ndarray:
        """Return which inputs of ``x`` (n, m) are outside the bounds (n, m), recording nothing."""
        return (x < self.low) | (x > self.high)

    def update(self, x: np.ndarray, names: tuple[str, ...]) -> bool:
        """Record a batch of model inputs (n, m); return True when an alert should fire."""
        bad = self.out_of_range(x)
        n = len(bad)
        if n == 1:  # the live path, one row a bar: no index arrays
            flag = bool(bad.any())
            self._bad += flag - bool(self._buf[self._pos])
            self._buf[self._pos] = flag
            self._pos = (self._pos + 1) % self.window
            self._count = min(self.window, self._count + 1)
            any_bad = flag
        else:
            flags = np.asarray(bad.any(axis=1))
            if n >= self.window:
                self._buf[:] = flags[-self.window :]
                self._pos, self._count = 0, self.window
                self._bad = int(np.count_nonzero(self._buf))
            elif n:
                idx = (self._pos + np.arange(n)) % self.window  # distinct: n < window
                self._bad += int(np.count_nonzero(flags)) - int(np.count_nonzero(self._buf[idx]))
                self._buf[idx] = flags
                self._pos = int((self._pos + n) % self.window)
                self._count = min(self.window, self._count + n)
            any_bad = bool(flags.any())
        if any_bad:
            self.worst = names[int(np.argmax(bad.sum(axis=0)))]
        frac = self.fraction
        if not self.alerting and self._count >= self.window and frac > self.max_fraction:
            self.alerting = True
            return True
        if self.alerting and frac <= self.max_fraction / 2:
            self.alerting = False
        return False


class ShadowStats:
    """Agreement (same side) and score drift (mean |Δp|) between served and shadow scores."""

    def __init__(self) -> None:
        self.rows = 0
        self.agree = 0
        self.abs_diff = 0.0

    def update(self, served_sides: np.ndarray, shadow_sides: np.ndarray, dp: np.ndarray) -> None:
        """Add one batch: per-row sides (as codes) and probability differences."""
        self.rows += len(dp)
        self.agree += int(np.count_nonzero(served_sides == shadow_sides))
        self.abs_diff += float(np.abs(dp).sum())

    @property
    def agreement(self) -> float:
        """Return the fraction of rows where both models chose the same side."""
        return self.agree / self.rows if self.rows else 1.0

    @property
    def drift(self) -> float:
        """Return the mean absolute probability difference."""
        return self.abs_diff / self.rows if self.rows else 0.0


def in_canary(symbol: str, fraction: float) -> bool:
    """Return True when ``symbol`` is in the canary bucket (a stable hash, not random)."""
    if fraction <= 0.0:
        return False
    return zlib.crc32(symbol.encode()) % 10_000 < fraction * 10_000

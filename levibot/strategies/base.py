"""What a strategy decides, and how a probability becomes a side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from levibot.messages import SignalSide


@dataclass(frozen=True, slots=True)
class Decision:
    """A strategy's call on one symbol: a side and the probability behind it."""

    side: SignalSide
    probability: float

    @property
    def confidence(self) -> float:
        """Return ``|p − 0.5| · 2``."""
        return abs(self.probability - 0.5) * 2.0


def side_for(p: float, long: float, short: float, allow_short: bool) -> SignalSide:
    """Return LONG at ``p >= long``, SHORT (or FLAT when shorting is off) at ``p <= short``."""
    if p >= long:
        return SignalSide.LONG
    if p <= short:
        return SignalSide.SHORT if allow_short else SignalSide.FLAT
    return SignalSide.FLAT


class RuleStrategy:
    """A per-symbol rule that emits a ``Decision`` only when its side changes.

    Subclasses implement ``_decide(symbol, values)``, returning the side the rule wants now or
    None for no opinion (warm-up, no crossing).
    """

    name = ""

    def __init__(self, *, probability: float = 0.8, allow_short: bool = False) -> None:
        self.probability = probability
        self.allow_short = allow_short
        self._side: dict[str, SignalSide] = {}

    def _down(self) -> SignalSide:
        return SignalSide.SHORT if self.allow_short else SignalSide.FLAT

    def _decide(self, symbol: str, values: Sequence[float]) -> SignalSide | None:
        raise NotImplementedError

    def update(self, symbol: str, values: Sequence[float]) -> Decision | None:
        """Feed one bar's features; return a decision when the side changes."""
        side = self._decide(symbol, values)
        if side is None or self._side.get(symbol) == side:
            return None
        self._side[symbol] = side
        p = self.probability if side is SignalSide.LONG else 1.0 - self.probability
        return Decision(side, p)

    def reset(self) -> None:
        """Forget every symbol's state (on stop: a restarted rule starts fresh)."""
        self._side.clear()

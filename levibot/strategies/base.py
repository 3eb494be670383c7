"""What a strategy decides, how a probability becomes a side, and the rule-strategy base."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

from levibot.config import Config
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


class RuleParams(Config, frozen=True, kw_only=True):
    """Base of a rule strategy's parameters (a config section: unknown keys are errors)."""


class RuleStrategy(abc.ABC):
    """A per-symbol rule over closed bars that emits a ``Decision`` only when its side changes.

    A rule owns its parameters (``params``, a ``params_type``) and its indicators, built with
    the incremental kernels of ``levibot.features.indicators`` at whatever periods it is
    given. It warms up only as long as those indicators need: ``warmup`` is the number of bars
    before the first decision is possible. Subclasses implement ``_indicators()`` (one
    symbol's fresh state) and ``_decide(state, high, low, close)``, returning the side the rule
    wants now or None for no opinion (warm-up, no crossing).
    """

    name: ClassVar[str] = ""
    params_type: ClassVar[type[RuleParams]] = RuleParams

    def __init__(
        self,
        params: RuleParams | None = None,
        *,
        probability: float = 0.8,
        allow_short: bool = False,
    ) -> None:
        self.params = params if params is not None else self.params_type()
        self.probability = probability
        self.allow_short = allow_short
        self._side: dict[str, SignalSide] = {}
        self._state: dict[str, Any] = {}

    @property
    @abc.abstractmethod
    def warmup(self) -> int:
        """Return how many bars a symbol needs before this rule can decide."""

    @abc.abstractmethod
    def _indicators(self) -> Any:
        """Return one symbol's fresh indicator state."""

    @abc.abstractmethod
    def _decide(self, state: Any, high: float, low: float, close: float) -> SignalSide | None:
        """Fold in one bar; return the side the rule wants now, or None."""

    def _down(self) -> SignalSide:
        return SignalSide.SHORT if self.allow_short else SignalSide.FLAT

    def update(self, symbol: str, high: float, low: float, close: float) -> Decision | None:
        """Feed one closed bar of ``symbol``; return a decision when the side changes."""
        state = self._state.get(symbol)
        if state is None:
            state = self._state[symbol] = self._indicators()
        side = self._decide(state, high, low, close)
        if side is None or self._side.get(symbol) == side:
            return None
        self._side[symbol] = side
        p = self.probability if side is SignalSide.LONG else 1.0 - self.probability
        return Decision(side, p)

    def reset(self) -> None:
        """Forget every symbol's state (on stop: a restarted rule starts fresh)."""
        self._side.clear()
        self._state.clear()

"""Equity, exposure and drawdown: the one definition every part of levibot uses.

The portfolio, the risk engine, the backtest report, the gateway and the bot all value a book
with these functions, so that a number called "equity" or "drawdown" means the same wherever
it is shown or checked:

- a position is marked at its last price; before any price is known, at its average entry
  price (``mark``);
- equity = cash + Σ quantity · mark (a short position subtracts);
- gross exposure = Σ |quantity · mark|; net exposure = Σ quantity · mark;
- drawdown = (peak − equity) / peak, 0 at or above the peak (profits are never drawdown) and
  0 while the peak is not positive.

A leaf module with no project imports: positions in (anything with ``quantity`` and
``last_price``), floats out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol


class Position(Protocol):
    """A position as the valuation sees it: a signed quantity and its mark price.

    The portfolio's holdings, the risk engine's book and snapshot positions all have these
    two attributes, so they are valued as they are, without copies on the hot path.
    """

    @property
    def quantity(self) -> float: ...

    @property
    def last_price(self) -> float: ...


class Marked(NamedTuple):
    """A position marked at another price than its own last one (a bar close, an entry)."""

    quantity: float
    last_price: float


def mark(last_price: float, avg_price: float) -> float:
    """Return the price a position is valued at: its last price, else its entry price."""
    return last_price if last_price > 0 else avg_price


# The sums are plain loops, not ``sum()``: since Python 3.12 ``sum`` of floats compensates
# rounding, so a backtest would give other bits on 3.11 than on 3.13; a loop adds in the same
# order everywhere (and costs a third of a generator on the per-bar path of every backtest).


def equity(cash: float, positions: Iterable[Position]) -> float:
    """Return cash plus every position at its mark."""
    held = 0
    for p in positions:
        held += p.quantity * p.last_price
    return cash + held


def gross_exposure(positions: Iterable[Position]) -> float:
    """Return Σ |quantity · mark|: what is at risk, longs and shorts alike."""
    total = 0
    for p in positions:
        total += abs(p.quantity * p.last_price)
    return total


def net_exposure(positions: Iterable[Position]) -> float:
    """Return Σ quantity · mark: longs minus shorts."""
    total = 0
    for p in positions:
        total += p.quantity * p.last_price
    return total


def drawdown(peak: float, equity_now: float) -> float:
    """Return the fall of ``equity_now`` from ``peak`` as a fraction of the peak."""
    return max(0.0, (peak - equity_now) / peak) if peak > 0 else 0.0


def max_drawdown(curve: Iterable[float]) -> float:
    """Return the largest :func:`drawdown` from the running peak along an equity curve."""
    peak, worst = 0.0, 0.0
    for e in curve:
        peak = max(peak, e)
        worst = max(worst, drawdown(peak, e))
    return worst

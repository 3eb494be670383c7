"""Execution: the one portfolio, the paper venue and the exchange-adapter interface."""

from levibot.execution.portfolio import (
    Applied,
    Holding,
    OrderOutput,
    Portfolio,
    PortfolioState,
)
from levibot.execution.venue import (
    ExchangeAdapter,
    Execution,
    FillMode,
    MarketView,
    PaperVenue,
    bar_exit,
    refusal,
    tick_exit,
)

__all__ = [
    "Applied",
    "ExchangeAdapter",
    "Execution",
    "FillMode",
    "Holding",
    "MarketView",
    "OrderOutput",
    "PaperVenue",
    "Portfolio",
    "PortfolioState",
    "bar_exit",
    "refusal",
    "tick_exit",
]

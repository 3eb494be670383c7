"""Market data: what the feed emits and the feature actor consumes."""

from __future__ import annotations

import enum
from typing import ClassVar

from levibot.messages._base import Overflow, SymbolMessage


class Side(enum.Enum):
    """The aggressor side of a trade, or the side of an order."""

    BUY = "buy"
    SELL = "sell"


class Tick(SymbolMessage, frozen=True, kw_only=True):
    """One trade on a venue."""

    venue: str
    price: float
    size: float
    side: Side = Side.BUY
    trade_id: int = 0

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.md.tick"

    def subject(self) -> str:
        return f"lb.md.tick.{self.venue}.{self.symbol}"


class Quote(SymbolMessage, frozen=True, kw_only=True):
    """Best bid and ask on a venue."""

    venue: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.md.quote"

    def subject(self) -> str:
        return f"lb.md.quote.{self.venue}.{self.symbol}"

    @property
    def spread_bps(self) -> float:
        """Return the quoted spread in basis points of the mid price."""
        mid = (self.bid + self.ask) / 2.0
        return (self.ask - self.bid) / mid * 1e4 if mid > 0 else float("inf")


class Bar(SymbolMessage, frozen=True, kw_only=True):
    """An OHLCV bar. ``ts_event`` is the bar's close (end of its interval); ``start`` its open."""

    venue: str
    timeframe: str  # "1s", "5s", "1m", "1h", ...
    start: int  # ns, inclusive
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int = 0

    # A closed bar is rare and every one changes the features: never conflate it away.
    overflow: ClassVar[Overflow] = Overflow.BLOCK
    subject_root: ClassVar[str] = "lb.md.bar"

    def subject(self) -> str:
        return f"lb.md.bar.{self.timeframe}.{self.symbol}"

    def conflation_key(self) -> object:
        return (Bar, self.symbol, self.timeframe)


class Features(SymbolMessage, frozen=True, kw_only=True):
    """A named feature vector: ``values`` in the order of the schema whose hash it carries."""

    schema_hash: str
    values: tuple[float, ...]
    price: float  # the last close the vector was computed at
    timeframe: str = ""
    spread_bps: float = 0.0  # last quoted spread, 0.0 when the feed has no quotes

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.feat"

    def subject(self) -> str:
        return f"lb.feat.{self.symbol}"

"""A symbol's trading rules from ``exchangeInfo``, applied to an order before it is sent.

Binance rejects an order that breaks a filter (``-1013 Filter failure: LOT_SIZE``) after a
round trip and a request's weight; checking here costs nothing and says why in our words.
Prices round to the tick (a buy's limit down, a sell's up: never a worse price than asked),
quantities down to the step; what is then below the minimum quantity or notional is refused.
Arithmetic is decimal: ``0.1 + 0.2`` steps must print as Binance expects, with no float noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

__all__ = ["FilterReject", "SymbolRules", "fmt"]


class FilterReject(ValueError):
    """An order the symbol's filters do not allow; ``filter`` names the one it broke."""

    def __init__(self, filter_: str, text: str) -> None:
        super().__init__(text)
        self.filter = filter_


def fmt(value: Decimal) -> str:
    """Return ``value`` as Binance wants it: plain digits, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """One symbol's filters: PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and (MIN_)NOTIONAL."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal = Decimal(0)
    min_price: Decimal = Decimal(0)
    max_price: Decimal = Decimal(0)
    step_size: Decimal = Decimal(0)
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal = Decimal(0)
    market_step: Decimal = Decimal(0)
    market_min_qty: Decimal = Decimal(0)
    market_max_qty: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)
    min_notional_market: bool = True  # NOTIONAL's applyMinToMarket

    @classmethod
    def from_exchange_info(cls, info: dict[str, Any]) -> SymbolRules:
        """Read one entry of ``exchangeInfo``'s ``symbols``."""
        f = {x["filterType"]: x for x in info.get("filters", ())}
        price, lot = f.get("PRICE_FILTER", {}), f.get("LOT_SIZE", {})
        market = f.get("MARKET_LOT_SIZE", {})
        notional = f.get("NOTIONAL") or f.get("MIN_NOTIONAL") or {}
        d = _dec
        return cls(
            symbol=info["symbol"],
            base_asset=info.get("baseAsset", ""),
            quote_asset=info.get("quoteAsset", ""),
            tick_size=d(price.get("tickSize")),
            min_price=d(price.get("minPrice")),
            max_price=d(price.get("maxPrice")),
            step_size=d(lot.get("stepSize")),
            min_qty=d(lot.get("minQty")),
            max_qty=d(lot.get("maxQty")),
            market_step=d(market.get("stepSize")),
            market_min_qty=d(market.get("minQty")),
            market_max_qty=d(market.get("maxQty")),
            min_notional=d(notional.get("minNotional")),
            min_notional_market=bool(
                notional.get("applyMinToMarket", notional.get("applyToMarket", True))
            ),
        )

    def price(self, side: str, price: float) -> Decimal:
        """Return a limit price on the tick (a buy's down, a sell's up), inside the band."""
        p = Decimal(repr(price))
        if self.tick_size > 0:
            rounding = ROUND_FLOOR if side == "BUY" else ROUND_CEILING
            p = (p / self.tick_size).to_integral_value(rounding) * self.tick_size
        if p <= 0 or (self.min_price > 0 and p < self.min_price):
            raise FilterReject("PRICE_FILTER", f"{self.symbol} price {p} below the minimum")
        if self.max_price > 0 and p > self.max_price:
            raise FilterReject("PRICE_FILTER", f"{self.symbol} price {p} above {self.max_price}")
        return p

    def quantity(self, quantity: float, *, market: bool) -> Decimal:
        """Return ``quantity`` floored to the step, checked against the quantity bounds."""
        step = self.market_step if market and self.market_step > 0 else self.step_size
        lo = self.market_min_qty if market and self.market_step > 0 else self.min_qty
        hi = self.market_max_qty if market and self.market_max_qty > 0 else self.max_qty
        q = Decimal(repr(quantity))
        if step > 0:
            q = (q / step).to_integral_value(ROUND_FLOOR) * step
        name = "MARKET_LOT_SIZE" if market and self.market_step > 0 else "LOT_SIZE"
        if q <= 0 or q < lo:
            raise FilterReject(name, f"{self.symbol} quantity {quantity:g} below {fmt(lo)}")
        if hi > 0 and q > hi:
            raise FilterReject(name, f"{self.symbol} quantity {fmt(q)} above {fmt(hi)}")
        return q

    def check_notional(self, quantity: Decimal, price: Decimal, *, market: bool) -> None:
        """Refuse an order whose notional at ``price`` is below the minimum."""
        if market and not self.min_notional_market:
            return
        if self.min_notional > 0 and quantity * price < self.min_notional:
            raise FilterReject(
                "NOTIONAL",
                f"{self.symbol} notional {fmt(quantity * price)} below {fmt(self.min_notional)}",
            )


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)

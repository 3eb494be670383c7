"""Binance spot: a signed async REST client, the symbol filters, the user-data stream, the venue."""

from levibot.execution.binance.client import BinanceError, BinanceSpotClient, RateLimited
from levibot.execution.binance.config import BinanceConfig, credentials, is_live
from levibot.execution.binance.filters import FilterReject, SymbolRules
from levibot.execution.binance.signing import sign, signed_query
from levibot.execution.binance.venue import (
    BinanceVenue,
    Ended,
    Placed,
    Refused,
    Traded,
    VenueEvent,
    venue_order_id,
)

__all__ = [
    "BinanceConfig",
    "BinanceError",
    "BinanceSpotClient",
    "BinanceVenue",
    "Ended",
    "FilterReject",
    "Placed",
    "RateLimited",
    "Refused",
    "SymbolRules",
    "Traded",
    "VenueEvent",
    "credentials",
    "is_live",
    "sign",
    "signed_query",
    "venue_order_id",
]

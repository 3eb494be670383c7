"""Denial codes of the risk engine and the fixed order in which its checks run."""

from __future__ import annotations

import enum


class DenyCode(enum.StrEnum):
    """Why the risk engine refused an order: the stable ``OrderDenied.code`` values."""

    KILL_SWITCH = "KILL_SWITCH"
    TRADING_HALTED = "TRADING_HALTED"
    REDUCING_ONLY = "REDUCING_ONLY"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    RATE_LIMIT = "RATE_LIMIT"
    BAD_ORDER = "BAD_ORDER"
    SHORT_NOT_ALLOWED = "SHORT_NOT_ALLOWED"
    NO_PRICE = "NO_PRICE"
    PRICE_OFF_MARKET = "PRICE_OFF_MARKET"
    BAD_SIZE = "BAD_SIZE"
    MAX_NOTIONAL = "MAX_NOTIONAL"
    MAX_POSITION = "MAX_POSITION"
    MAX_EXPOSURE = "MAX_EXPOSURE"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    MAX_TRADES_PER_DAY = "MAX_TRADES_PER_DAY"
    DAILY_LOSS = "DAILY_LOSS"
    MAX_DRAWDOWN = "MAX_DRAWDOWN"
    COOLDOWN_LOSS = "COOLDOWN_LOSS"
    COOLDOWN_STOP_LOSS = "COOLDOWN_STOP_LOSS"
    MIN_TIME_BETWEEN_TRADES = "MIN_TIME_BETWEEN_TRADES"
    MAX_SPREAD = "MAX_SPREAD"


#: The order the checks run in; the first failing one is the denial. ``*`` marks the checks
#: that apply only to exposure-increasing orders (entries): an order that only reduces a
#: position is never blocked by a limit meant to stop new risk.
CHECK_ORDER: tuple[str, ...] = (
    "KILL_SWITCH",
    "TRADING_HALTED / REDUCING_ONLY",
    "LOW_CONFIDENCE*",
    "RATE_LIMIT",
    "BAD_ORDER, SHORT_NOT_ALLOWED, PRICE_OFF_MARKET (manual orders), NO_PRICE, BAD_SIZE",
    "MAX_NOTIONAL*",
    "MAX_POSITION*",
    "MAX_EXPOSURE*",
    "MAX_OPEN_POSITIONS*",
    "MAX_TRADES_PER_DAY*",
    "DAILY_LOSS*",
    "MAX_DRAWDOWN*",
    "COOLDOWN_LOSS*",
    "COOLDOWN_STOP_LOSS*",
    "MIN_TIME_BETWEEN_TRADES*",
    "MAX_SPREAD*",
)

"""Market-data sources behind one interface: ``replay``, ``synthetic`` and ``binance``.

Each source module defines its config (a frozen ``Config``) and a ``Source`` subclass;
``load_source(kind)`` imports only the one asked for, so a node replaying a file never imports
the websocket client.
"""

from __future__ import annotations

import importlib
from typing import Any

from levibot.feeds._base import Emit, MarketData, Pacer, Source

#: source kind → "module:Class"
SOURCES: dict[str, str] = {
    "replay": "levibot.feeds.replay:ReplaySource",
    "synthetic": "levibot.feeds.synthetic:SyntheticSource",
    "binance": "levibot.feeds.binance:BinanceSource",
}


def load_source(kind: str) -> type[Source[Any]]:
    """Return the ``Source`` class registered as ``kind``."""
    try:
        target = SOURCES[kind]
    except KeyError:
        raise KeyError(f"unknown feed source {kind!r}; known: {', '.join(SOURCES)}") from None
    module, _, attr = target.partition(":")
    cls: type[Source[Any]] = getattr(importlib.import_module(module), attr)
    return cls


__all__ = ["SOURCES", "Emit", "MarketData", "Pacer", "Source", "load_source"]

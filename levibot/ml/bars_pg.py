"""Training data from the bars the store persisted in PostgreSQL.

``load_bars_pg`` reads one symbol's bars of one timeframe (optionally one venue and a time
range of bar open times) through ``levibot.marketdata.history.PgBarHistory``, oldest first,
into the same ``Bars`` arrays a kline CSV gives: what ``levibot train --source postgres`` and
``POST /retrain`` in the pods train on. Bars are taken as stored (the store validated them); a
symbol stored from several venues must name one.
"""

from __future__ import annotations

import numpy as np

from levibot.marketdata.history import HistoryError, PgBarHistory
from levibot.ml.card import ModelError
from levibot.ml.dataset import Bars


async def load_bars_pg(
    dsn: str,
    *,
    symbol: str,
    timeframe: str,
    venue: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    schema: str = "public",
) -> Bars:
    """Return the stored bars of ``symbol`` at ``timeframe`` with ``since <= open < until``."""
    history = PgBarHistory(dsn, schema=schema)
    try:
        if venue is None:
            names = await history.venues(symbol, timeframe)
            if len(names) > 1:
                raise ModelError(f"{symbol} {timeframe} is stored from venues {names}: name one")
        bars = await history.between(symbol, timeframe, venue, since_ns, until_ns)
    except HistoryError as exc:
        raise ModelError(str(exc)) from None
    finally:
        await history.close()
    if not bars:
        where = f" from {venue}" if venue else ""
        raise ModelError(f"no stored {timeframe} bars of {symbol}{where} in that range")
    return Bars(
        ts=np.array([b.start for b in bars], dtype=np.int64),
        open=np.array([b.open for b in bars]),
        high=np.array([b.high for b in bars]),
        low=np.array([b.low for b in bars]),
        close=np.array([b.close for b in bars]),
        volume=np.array([b.volume for b in bars]),
        source=f"postgres:{symbol}/{timeframe}" + (f"@{venue}" if venue else ""),
    )

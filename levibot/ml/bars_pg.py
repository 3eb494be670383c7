"""Training data from the bars the store persisted in PostgreSQL.

``load_bars_pg`` reads one symbol's bars of one timeframe (optionally one venue and a time
range of bar open times) from the ``bars`` table, oldest first, into the same ``Bars`` arrays
a kline CSV gives: what ``levibot train --source postgres`` and ``POST /retrain`` in the pods
train on. Bars are taken as stored (the store validated them); a symbol stored from several
venues must name one.
"""

from __future__ import annotations

import numpy as np

from levibot.ml.card import ModelError
from levibot.ml.dataset import Bars

_QUERY = """
SELECT start_ns, open, high, low, close, volume FROM {table}
WHERE symbol = $1 AND timeframe = $2 AND ($3::text IS NULL OR venue = $3)
  AND ($4::bigint IS NULL OR start_ns >= $4) AND ($5::bigint IS NULL OR start_ns < $5)
ORDER BY start_ns
"""


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
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ModelError(f"cannot read bars from PostgreSQL: {exc}") from None
    try:
        venues = await conn.fetch(
            f"SELECT DISTINCT venue FROM {schema}.bars WHERE symbol = $1 AND timeframe = $2",
            symbol,
            timeframe,
        )
        names = sorted(r["venue"] for r in venues)
        if venue is None and len(names) > 1:
            raise ModelError(f"{symbol} {timeframe} is stored from venues {names}: name one")
        rows = await conn.fetch(
            _QUERY.format(table=f"{schema}.bars"), symbol, timeframe, venue, since_ns, until_ns
        )
    except asyncpg.UndefinedTableError:
        raise ModelError("no bars table: run `levibot db migrate` and the store first") from None
    finally:
        await conn.close()
    if not rows:
        where = f" from {venue}" if venue else ""
        raise ModelError(f"no stored {timeframe} bars of {symbol}{where} in that range")
    data = np.array([tuple(r) for r in rows], dtype=np.float64)
    return Bars(
        ts=np.array([r["start_ns"] for r in rows], dtype=np.int64),
        open=np.ascontiguousarray(data[:, 1]),
        high=np.ascontiguousarray(data[:, 2]),
        low=np.ascontiguousarray(data[:, 3]),
        close=np.ascontiguousarray(data[:, 4]),
        volume=np.ascontiguousarray(data[:, 5]),
        source=f"postgres:{symbol}/{timeframe}" + (f"@{venue}" if venue else ""),
    )

"""Past closed bars of a symbol, from where they are kept: PostgreSQL or the exchange's REST API.

A restarted feature actor rebuilds each symbol's state from the bars before the first live
one, so the first live bar already yields features, instead of waiting ``WARMUP`` bars (days,
on hourly bars). ``BarHistory.recent`` returns up to ``count`` closed bars of one symbol,
venue and timeframe opening before ``before_ns``, oldest first.

- ``PgBarHistory``: the ``bars`` table the store writes (one query, newest first, reversed).
- ``BinanceKlines``: ``GET /api/v3/klines`` of Binance spot's public REST API, paged back in
  time by ``endTime`` (at most 1,000 klines a request, oldest first in each page). It is
  weight-aware: it reads ``X-MBX-USED-WEIGHT-1M`` and waits for the next minute before
  crossing ``max_weight``; a ``429`` or ``418`` waits ``Retry-After`` and tries again, a few
  times. Any other failure is a ``HistoryError`` (the caller starts cold).
- ``FallbackHistory``: the first source that has any bars.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import anyio

from levibot.errors import LevibotError
from levibot.marketdata.timeframe import parse_timeframe
from levibot.messages import Bar

__all__ = ["BarHistory", "BinanceKlines", "FallbackHistory", "HistoryError", "PgBarHistory"]

NS_PER_MS = 1_000_000
#: Binance spot kline intervals (its names are ours for these).
BINANCE_INTERVALS = frozenset(
    ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
)


class HistoryError(LevibotError):
    """Past bars could not be read (server gone, refused, garbage)."""


class BarHistory(Protocol):
    """Where past bars come from."""

    name: str

    async def recent(
        self, symbol: str, venue: str, timeframe: str, before_ns: int, count: int
    ) -> list[Bar]:
        """Return up to ``count`` closed bars opening before ``before_ns``, oldest first."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class PgBarHistory:
    """Bars the store persisted in PostgreSQL's ``bars`` table."""

    name = "postgres"

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        self.dsn = dsn
        self.schema = schema
        self._pool: Any = None

    async def recent(
        self, symbol: str, venue: str, timeframe: str, before_ns: int, count: int
    ) -> list[Bar]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.bars WHERE symbol = $1 AND venue = $2"
            " AND timeframe = $3 AND start_ns < $4 ORDER BY start_ns DESC LIMIT $5",
            symbol, venue, timeframe, before_ns, count,
        )  # fmt: skip
        return [_bar(r, symbol, timeframe) for r in reversed(rows)]

    async def between(
        self,
        symbol: str,
        timeframe: str,
        venue: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> list[Bar]:
        """Return the stored bars with ``since <= open < until`` (any venue: None), oldest first."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.bars WHERE symbol = $1 AND timeframe = $2"
            " AND ($3::text IS NULL OR venue = $3) AND ($4::bigint IS NULL OR start_ns >= $4)"
            " AND ($5::bigint IS NULL OR start_ns < $5) ORDER BY start_ns",
            symbol, timeframe, venue, since_ns, until_ns,
        )  # fmt: skip
        return [_bar(r, symbol, timeframe) for r in rows]

    async def venues(self, symbol: str, timeframe: str) -> list[str]:
        """Return the venues the symbol's bars of ``timeframe`` were stored from."""
        rows = await self._fetch(
            f"SELECT DISTINCT venue FROM {self.schema}.bars WHERE symbol = $1 AND timeframe = $2",
            symbol, timeframe,
        )  # fmt: skip
        return sorted(r["venue"] for r in rows)

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        import asyncpg

        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
            return list(await self._pool.fetch(query, *args))
        except asyncpg.UndefinedTableError:
            raise HistoryError("no bars table: run `levibot db migrate` and the store") from None
        except (OSError, asyncpg.PostgresError) as exc:
            raise HistoryError(f"cannot read bars from PostgreSQL: {exc}") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


_COLUMNS = "venue, start_ns, ts_event, open, high, low, close, volume, trades"


def _bar(r: Any, symbol: str, timeframe: str) -> Bar:
    """Return a ``bars`` row as the ``Bar`` the feed published."""
    return Bar(
        ts_event=r["ts_event"], ts_init=r["ts_event"], ts_ingress=r["ts_event"], symbol=symbol,
        venue=r["venue"], timeframe=timeframe, start=r["start_ns"], open=r["open"],
        high=r["high"], low=r["low"], close=r["close"], volume=r["volume"], trades=r["trades"],
    )  # fmt: skip


class BinanceKlines:
    """Closed klines from Binance spot's public REST API (no key needed)."""

    name = "binance"

    def __init__(
        self,
        base_url: str,
        *,
        max_weight: int = 1_000,
        request_weight: int = 2,
        max_retries: int = 5,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_weight = max_weight
        self.request_weight = request_weight
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.used_weight = 0  # the last X-MBX-USED-WEIGHT-1M the server reported
        self.requests = 0
        self._session: Any = None

    async def recent(
        self, symbol: str, venue: str, timeframe: str, before_ns: int, count: int
    ) -> list[Bar]:
        if timeframe not in BINANCE_INTERVALS:
            raise HistoryError(f"Binance has no {timeframe!r} klines")
        interval = parse_timeframe(timeframe)
        pages: list[list[Bar]] = []
        left, end_ms = count, before_ns // NS_PER_MS - 1
        while left > 0:
            limit = min(1_000, left)
            params = {"symbol": symbol, "interval": timeframe, "endTime": end_ms, "limit": limit}
            raw = await self._get("/api/v3/klines", params)
            page = [self._bar(k, symbol, venue, timeframe, interval) for k in _rows(raw)]
            page = [b for b in page if b.start < before_ns]
            if not page:
                break
            pages.append(page)
            left -= len(page)
            if len(raw) < limit:
                break  # the start of the symbol's history
            end_ms = page[0].start // NS_PER_MS - 1
        bars = [b for page in reversed(pages) for b in page]
        return bars[-count:] if len(bars) > count else bars

    @staticmethod
    def _bar(k: Any, symbol: str, venue: str, timeframe: str, interval: int) -> Bar:
        try:
            start = int(k[0]) * NS_PER_MS
            o, h, lo, c, v = (float(x) for x in k[1:6])
            trades = int(k[8])
        except (TypeError, ValueError, IndexError):
            raise HistoryError(f"malformed kline from Binance: {str(k)[:80]!r}") from None
        if not all(math.isfinite(x) for x in (o, h, lo, c, v)) or start < 0:
            raise HistoryError(f"malformed kline from Binance: {str(k)[:80]!r}")
        end = start + interval
        return Bar(
            ts_event=end, ts_init=end, ts_ingress=end, symbol=symbol, venue=venue,
            timeframe=timeframe, start=start, open=o, high=h, low=lo, close=c, volume=v,
            trades=trades,
        )  # fmt: skip

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        if self.used_weight + self.request_weight > self.max_weight:
            await anyio.sleep(60.0 - time.time() % 60.0)  # the weight window is per minute
            self.used_weight = 0
        for attempt in range(self.max_retries + 1):
            try:
                async with self._session.get(self.base_url + path, params=params) as r:
                    self.requests += 1
                    used = r.headers.get("X-MBX-USED-WEIGHT-1M", "")
                    if used.isdigit():
                        self.used_weight = int(used)
                    if r.status in (418, 429) and attempt < self.max_retries:
                        await anyio.sleep(_retry_after(r.headers.get("Retry-After", "")))
                        continue
                    text = await r.text()
                    if r.status != 200:
                        raise HistoryError(f"Binance answered {r.status}: {text[:120]}")
                    return _json(text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise HistoryError(f"cannot reach Binance at {self.base_url}: {exc}") from None
        raise HistoryError(f"Binance kept refusing ({self.max_retries} retries)")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class FallbackHistory:
    """Each source in turn, until one has bars."""

    def __init__(self, sources: list[BarHistory]) -> None:
        self.sources = sources
        self.name = "+".join(s.name for s in sources)
        self.used = ""  # the source the last call's bars came from

    async def recent(
        self, symbol: str, venue: str, timeframe: str, before_ns: int, count: int
    ) -> list[Bar]:
        errors = []
        for source in self.sources:
            try:
                bars = await source.recent(symbol, venue, timeframe, before_ns, count)
            except HistoryError as exc:
                errors.append(str(exc))
                continue
            if bars:
                self.used = source.name
                return bars
        if errors:
            raise HistoryError("; ".join(errors))
        return []

    async def close(self) -> None:
        for source in self.sources:
            await source.close()


def _retry_after(value: str) -> float:
    try:
        return min(max(float(value), 0.0), 120.0)
    except ValueError:
        return 1.0


def _json(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise HistoryError(f"Binance answered non-JSON: {text[:80]!r}") from None


def _rows(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise HistoryError(f"Binance answered {str(raw)[:120]!r}, not a list of klines")
    return raw

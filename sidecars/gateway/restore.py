"""The gateway's read side rebuilt from the store at start (CQRS): what it showed before a restart.

With a PostgreSQL DSN, the newest events of the store's log (``levibot.storage.events``) go
through ``ReadModels.apply``, the code that builds the views from the bus, oldest first: the
order states (``GET /orders/{id}``), the portfolio and its equity history (the Mini App's
chart), the fills, recent signals and alerts, and the risk controls last commanded. Each family
is read up to what its view keeps, so a long log costs no more than a short one. The chart's
candles come from the ``bars`` table (the newest ones of each symbol, timeframe and venue).

Messages the bus delivers again after this (JetStream redelivers what a stopped gateway missed)
change nothing: ``ReadModels.apply`` takes each fill and alert once and never moves an order's
status back. A store that is down or not migrated leaves the views empty, as before; the
gateway starts anyway and logs why.

``OrderLookup`` answers ``GET /orders/{id}`` for an order the views do not hold (older than
what they keep) from the ``orders`` and ``fills`` tables, folded by the same ``apply``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from levibot.marketdata.history import HistoryError, PgBarHistory
from levibot.messages import (
    Alert,
    Bar,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Signal,
    SubmitOrder,
)
from levibot.storage.events import EventPage, StoredEvent, tail_events
from levibot.storage.orders import order_messages
from sidecars.gateway.errors import ApiError
from sidecars.gateway.readmodels import OrderState, ReadModels

ORDER_EVENTS = (SubmitOrder, OrderIntent, OrderDenied, OrderAccepted, Fill, OrderClosed)
#: Events per order kept in view: submitted, decided, accepted, filled, closed (and a spare).
EVENTS_PER_ORDER = 6
CONTROLS = (SetKillSwitch, SetTradingState, SetRiskPolicy)


class Restored(msgspec.Struct, kw_only=True):
    """What a restore read and applied."""

    events: int = 0
    bad_rows: int = 0
    last_seq: int = 0
    orders: int = 0
    equity_points: int = 0
    bars: int = 0


def plan(models: ReadModels) -> list[tuple[tuple[type[Message], ...], int]]:
    """Return, per family of events, how many of the newest the views can hold."""
    charts = models.charts
    return [
        (ORDER_EVENTS, EVENTS_PER_ORDER * models.max_orders),
        ((Signal,), models.signals.maxlen or 0),
        ((Alert,), models.alerts.maxlen or 0),
        ((PortfolioSnapshot,), charts.equity.maxlen or 1),
        (CONTROLS, 3 * 16),  # the newest of each control is what counts
    ]


def apply_events(models: ReadModels, events: list[StoredEvent]) -> None:
    """Apply stored events to the views in log order (commands set the risk controls)."""
    for ev in sorted(events, key=lambda e: e.seq):
        msg = ev.message
        match msg:
            case SubmitOrder():
                models.submitted(msg)
            case SetKillSwitch():
                models.risk.kill_switch = msg.on
                models.risk.updated_ns = msg.ts_init
            case SetTradingState():
                models.risk.trading_state = msg.state.value
                models.risk.updated_ns = msg.ts_init
            case SetRiskPolicy():
                models.risk.policy = msg.policy
                models.risk.updated_ns = msg.ts_init
            case _:
                models.apply(msg)


async def restore(models: ReadModels, dsn: str, log: Any, *, timeout_s: float = 10.0) -> Restored:
    """Load the newest stored events into ``models``; on failure log it and change nothing."""
    import asyncpg

    counts = EventPage()
    events: list[StoredEvent] = []
    keys: list[tuple[str, str, str]] = []
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s, command_timeout=timeout_s)
        try:
            for types, limit in plan(models):
                events += await tail_events(conn, types, limit, counts)
            keys = [(k["symbol"], k["timeframe"], k["venue"]) for k in await conn.fetch(_BAR_KEYS)]
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Not fatal: the views fill from the bus as before. The DSN may hold a password.
        log.warning("gateway.restore_failed", error=type(exc).__name__, detail=str(exc))
        return Restored()
    bars = await _recent_bars(dsn, keys, models.charts.max_bars, log)
    for bar in sorted(bars, key=lambda b: (b.start, b.venue)):
        models.apply(bar)
    apply_events(models, events)
    done = Restored(
        events=len(events), bad_rows=counts.bad, last_seq=counts.last_seq,
        orders=len(models.orders), equity_points=len(models.charts.equity), bars=len(bars),
    )  # fmt: skip
    log.info("gateway.restored", **msgspec.to_builtins(done))
    return done


#: Every (symbol, timeframe, venue) the ``bars`` table holds, one index probe each (a skip scan
#: of its primary key: no pass over the bars themselves).
_BAR_KEYS = """
WITH RECURSIVE k AS (
    (SELECT symbol, timeframe, venue FROM bars ORDER BY symbol, timeframe, venue LIMIT 1)
    UNION ALL
    SELECT n.symbol, n.timeframe, n.venue FROM k CROSS JOIN LATERAL (
        SELECT symbol, timeframe, venue FROM bars
        WHERE (symbol, timeframe, venue) > (k.symbol, k.timeframe, k.venue)
        ORDER BY symbol, timeframe, venue LIMIT 1
    ) n
)
SELECT symbol, timeframe, venue FROM k
"""


async def _recent_bars(
    dsn: str, keys: list[tuple[str, str, str]], count: int, log: Any
) -> list[Bar]:
    """Return the newest ``count`` stored bars of each (symbol, timeframe, venue) in ``keys``."""
    history = PgBarHistory(dsn)
    bars: list[Bar] = []
    try:
        for symbol, timeframe, venue in keys:
            bars += await history.recent(symbol, venue, timeframe, 2**63 - 1, count)
    except HistoryError as exc:  # the candles only: the rest is restored
        log.warning("gateway.restore_bars_failed", error=str(exc))
        return []
    finally:
        await history.close()
    return bars


class OrderLookup:
    """Orders the read models do not hold, looked up in PostgreSQL (a small lazy pool)."""

    def __init__(self, dsn: str, *, timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self._pool: Any = None

    async def get(self, client_order_id: str) -> OrderState | None:
        """Return the order's state as the views would show it; None when PostgreSQL has none.

        Raises ``ApiError`` 503 while PostgreSQL cannot answer."""
        import asyncpg

        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=0, max_size=2, timeout=self.timeout_s,
                    command_timeout=self.timeout_s,
                )  # fmt: skip
            async with self._pool.acquire() as conn:
                msgs = await order_messages(conn, client_order_id)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            raise ApiError(503, "store_unavailable", "the order store cannot answer now") from None
        if not msgs:
            return None
        views = ReadModels(recent_signals=1, max_orders=1)
        for msg in msgs:
            views.apply(msg)
        return views.orders.get(client_order_id)

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


ORDER_LOOKUP = web.AppKey("order_lookup", OrderLookup)

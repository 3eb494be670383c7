"""Messages → PostgreSQL rows: which table each message goes to, and its column tuple.

Market data (Tick, Bar, Features) goes to its own table only; every other message also goes to
the append-only ``events`` log as JSONB (``events_market_data`` adds market data there too;
``events=False`` turns the log off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from levibot.messages import (
    Bar,
    Command,
    Features,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Signal,
    Tick,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_json = msgspec.json.Encoder()


class Table(msgspec.Struct, frozen=True):
    """A target table: its columns in COPY order, and whether rows have a natural key."""

    name: str
    columns: tuple[str, ...]
    natural_key: bool = False  # staged and inserted ON CONFLICT DO NOTHING


def _table(name: str, columns: str, natural_key: bool = False) -> Table:
    return Table(name, tuple(columns.split()), natural_key)


TICKS = _table("ticks", "ts ts_event ts_ingress venue symbol price size side trade_id")
BARS = _table(
    "bars",
    "symbol venue timeframe start_ns ts ts_event open high low close volume trades",
    natural_key=True,
)
FEATURES = _table("features", "symbol ts ts_event schema_hash timeframe price spread_bps vector")
SIGNALS = _table(
    "signals",
    "ts ts_event ts_init symbol strategy side probability confidence price atr spread_bps model_id",
)
ORDERS = _table(
    "orders",
    "client_order_id kind ts ts_event ts_init symbol strategy side quantity price stop_loss "
    "take_profit reduce_only reason code realized_pnl",
    natural_key=True,
)
FILLS = _table(
    "fills",
    "fill_id client_order_id ts ts_event ts_init symbol side quantity price fee realized_pnl "
    "reason position_after",
    natural_key=True,
)
EQUITY = _table("equity", "ts ts_event cash equity realized_pnl unrealized_pnl fees positions")
EVENTS = _table("events", "type ts ts_event symbol body")
AUDIT = _table("audit_log", "ts ts_event actor action args command_id", natural_key=True)

TABLES: tuple[Table, ...] = (TICKS, BARS, FEATURES, SIGNALS, ORDERS, FILLS, EQUITY, EVENTS, AUDIT)
MARKET_DATA = (Tick, Bar, Features)


def ns_to_dt(ns: int) -> datetime:
    """Return the UTC datetime of ``ns`` nanoseconds since the epoch (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def type_name(msg: Message) -> str:
    """Return a message's wire tag, e.g. ``levibot.Fill``."""
    return str(type(msg).__struct_config__.tag)


def command_args(cmd: Command) -> dict[str, Any]:
    """Return a command's own fields (not the base ones) as a JSON-ready dict."""
    skip = {"ts_event", "ts_init", "ts_ingress", "command_id", "issued_by"}
    raw: dict[str, Any] = msgspec.to_builtins(cmd)
    return {k: v for k, v in raw.items() if k not in skip and k != "type"}


# Row builders. ``ts`` columns are integer microseconds since the Unix epoch: the writer's
# connection encodes them as timestamptz directly (``TIMESTAMP_CODEC``), which saves building
# a datetime per row (the largest cost of a tick row).
Row = tuple[Any, ...]


# fmt: off
def _tick(m: Tick) -> Row:
    return (m.ts_event // 1000, m.ts_event, m.ts_ingress, m.venue, m.symbol, m.price, m.size,
            m.side.value, m.trade_id)


def _bar(m: Bar) -> Row:
    return (m.symbol, m.venue, m.timeframe, m.start, m.ts_event // 1000, m.ts_event, m.open,
            m.high, m.low, m.close, m.volume, m.trades)


def _features(m: Features) -> Row:
    return (m.symbol, m.ts_event // 1000, m.ts_event, m.schema_hash, m.timeframe, m.price,
            m.spread_bps, list(m.values))


def _signal(m: Signal) -> Row:
    return (m.ts_event // 1000, m.ts_event, m.ts_init, m.symbol, m.strategy, m.side.value,
            m.probability, m.confidence, m.price, m.atr, m.spread_bps, m.model_id)


# orders columns after (client_order_id, kind, ts, ts_event, ts_init, symbol):
# strategy, side, quantity, price, stop_loss, take_profit, reduce_only, reason, code, realized_pnl
def _head(m: Any, kind: str) -> Row:
    return (m.client_order_id, kind, m.ts_event // 1000, m.ts_event, m.ts_init, m.symbol)


def _intent(m: OrderIntent) -> Row:
    return (*_head(m, "intent"), m.strategy, m.side.value, m.quantity, m.price, m.stop_loss,
            m.take_profit, m.reduce_only, m.reason, "", 0.0)


def _denied(m: OrderDenied) -> Row:
    return (*_head(m, "denied"), m.strategy, "", 0.0, 0.0, 0.0, 0.0, False, m.reason, m.code, 0.0)


def _accepted(m: OrderAccepted) -> Row:
    return (*_head(m, "accepted"), "", m.side.value, m.quantity, 0.0, 0.0, 0.0, False, "", "", 0.0)


def _closed(m: OrderClosed) -> Row:
    return (*_head(m, "closed"), "", "", 0.0, m.exit_price, 0.0, 0.0, False, m.reason, "",
            m.realized_pnl)


def _fill(m: Fill) -> Row:
    return (m.fill_id, m.client_order_id, m.ts_event // 1000, m.ts_event, m.ts_init, m.symbol,
            m.side.value, m.quantity, m.price, m.fee, m.realized_pnl, m.reason, m.position_after)


def _equity(m: PortfolioSnapshot) -> Row:
    return (m.ts_event // 1000, m.ts_event, m.cash, m.equity, m.realized_pnl, m.unrealized_pnl,
            m.fees, _json.encode(m.positions).decode())


def _audit(m: Command) -> Row:
    return (m.ts_event // 1000, m.ts_event, m.issued_by, type(m).__name__,
            _json.encode(command_args(m)).decode(), m.command_id)


def _event(m: Message) -> Row:
    return (type_name(m), m.ts_event // 1000, m.ts_event, getattr(m, "symbol", None),
            _json.encode(m).decode())
# fmt: on


_BUILDERS: dict[type, tuple[Table, Callable[[Any], Row]]] = {
    Tick: (TICKS, _tick),
    Bar: (BARS, _bar),
    Features: (FEATURES, _features),
    Signal: (SIGNALS, _signal),
    OrderIntent: (ORDERS, _intent),
    OrderDenied: (ORDERS, _denied),
    OrderAccepted: (ORDERS, _accepted),
    OrderClosed: (ORDERS, _closed),
    Fill: (FILLS, _fill),
    PortfolioSnapshot: (EQUITY, _equity),
}
for _cmd in Command.__subclasses__():
    _BUILDERS[_cmd] = (AUDIT, _audit)


def _builder(cls: type) -> tuple[Table, Callable[[Any], Row]] | None:
    found = _BUILDERS.get(cls)
    if found is None and issubclass(cls, Command):
        found = _BUILDERS[cls] = (AUDIT, _audit)  # a command defined after import
    return found


def to_rows(
    msg: Message,
    *,
    store_ticks: bool = True,
    store_features: bool = False,
    events_market_data: bool = False,
    events: bool = True,
) -> list[tuple[Table, Row]]:
    """Return the ``(table, row)`` pairs one message is stored as (possibly none)."""
    out: list[tuple[Table, Row]] = []
    cls = type(msg)
    found = _builder(cls)
    if found is not None:
        table, build = found
        if (table is not TICKS or store_ticks) and (table is not FEATURES or store_features):
            out.append((table, build(msg)))
    if events and (events_market_data or cls not in MARKET_DATA):
        out.append((EVENTS, _event(msg)))
    return out


def group_rows(
    msgs: Iterable[Message],
    *,
    store_ticks: bool = True,
    store_features: bool = False,
    events_market_data: bool = False,
    events: bool = True,
) -> dict[Table, list[Row]]:
    """Return the rows of ``msgs`` grouped by table, in message order within each table."""
    grouped: dict[Table, list[Row]] = {}
    for msg in msgs:
        cls = type(msg)
        found = _builder(cls)
        if found is not None:
            table, build = found
            if (table is not TICKS or store_ticks) and (table is not FEATURES or store_features):
                rows = grouped.get(table)
                if rows is None:
                    rows = grouped[table] = []
                rows.append(build(msg))
        if events and (events_market_data or cls not in MARKET_DATA):
            rows = grouped.get(EVENTS)
            if rows is None:
                rows = grouped[EVENTS] = []
            rows.append(_event(msg))
    return grouped


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds


def _encode_ts(us: int | datetime) -> tuple[int]:
    if isinstance(us, datetime):
        us = (us - _EPOCH) // timedelta(microseconds=1)
    return (us - _PG_EPOCH_US,)


def _decode_ts(value: tuple[int]) -> datetime:
    return _EPOCH + timedelta(microseconds=value[0] + _PG_EPOCH_US)


#: ``set_type_codec`` arguments that let a connection take integer Unix microseconds (or a
#: datetime) for timestamptz, as the rows above carry them.
TIMESTAMP_CODEC: dict[str, Any] = {
    "typename": "timestamptz",
    "schema": "pg_catalog",
    "encoder": _encode_ts,
    "decoder": _decode_ts,
    "format": "tuple",
}

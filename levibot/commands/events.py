"""``levibot events replay --until TIME``: the portfolio and the risk state at a past instant.

Time travel over the store's event log (the ``events`` table, ``levibot.storage.events``):
the events created (``ts_init``) by ``TIME`` are read, put in the order they were created (the
store may hear them in another across processes: see ``in_causal_order``) and folded through
the real code, nothing recomputed by a formula of its own:

* the portfolio: a ``Portfolio`` (``levibot.execution``) with ``[order]``'s cash, fee and
  quantity step applies every ``Fill`` (with its ``OrderIntent``, for the exits it carries) and
  is marked by every ``PortfolioSnapshot`` (and ``Tick``/``Bar``/``Quote`` when the log has
  market data, ``[store] events_market_data``);
* the risk state: a ``RiskActor`` with ``[risk]``'s config, not persisting, handles every
  message it consumes, as the live one did, under the replay clock (decisions are stamped
  with each message's event time).

What the rebuild decided is checked against what the log says was decided: a fill that does not
come out the same, or an intent or denial the risk actor would not take again, is listed under
``diverged`` (a config that differs from the live one's, a log that does not start with the
system, or clock-dependent risk limits of a live, not replayed, run). Without market data in the
log, the risk state's ``last_price`` / ``last_price_ns`` follow signals and fills only.

Prints one JSON object: ``until_ns``, ``events``, ``last_seq``, ``bad_rows``, ``portfolio``,
``risk``, ``diverged`` (a count) and ``divergences`` (the first 50).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from levibot.commands.run import add_common, config_path
from levibot.errors import LevibotError
from levibot.execution.portfolio import Holding

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: At most this many divergences are listed (all are counted).
MAX_DIVERGED = 50


class PortfolioAt(msgspec.Struct, kw_only=True):
    """The portfolio's figures and positions (what ``events replay`` rebuilds and prints)."""

    cash: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    fills: int
    holdings: dict[str, Holding]


class Rebuilt(msgspec.Struct, kw_only=True):
    """The state at ``until_ns`` and how the log went into it."""

    until_ns: int
    events: int
    last_seq: int
    bad_rows: int
    portfolio: PortfolioAt
    risk: Any  # levibot.risk.RiskState, its outbox (transport bookkeeping) left empty
    diverged: int
    divergences: list[str]


def portfolio_at(portfolio: Any) -> PortfolioAt:
    """Return the figures of a ``levibot.execution.Portfolio`` (live or rebuilt)."""
    s = portfolio.state
    return PortfolioAt(
        cash=s.cash, equity=portfolio.equity, realized_pnl=s.realized_pnl,
        unrealized_pnl=portfolio.unrealized, fees=s.fees, fills=s.fills,
        holdings={k: msgspec.structs.replace(h) for k, h in sorted(s.holdings.items())},
    )  # fmt: skip


def risk_at(state: Any) -> Any:
    """Return a copy of a ``RiskState`` without its outbox, for printing or comparing."""
    copy = msgspec.json.decode(msgspec.json.encode(state), type=type(state))
    copy.outbox = []
    return copy


def parse_instant(text: str) -> int:
    """Return ``text`` (ISO 8601, UTC unless it says otherwise, or integer ns) as ns."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LevibotError(
            f"--until {text!r}: not an instant; give ISO 8601 (2021-06-01T12:00:00Z) "
            "or nanoseconds since the epoch"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1_000


class _Divergences:
    def __init__(self) -> None:
        self.count = 0
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.items) < MAX_DIVERGED:
            self.items.append(text)


def _decision(msg: Any) -> tuple[Any, ...]:
    """What a risk decision says, without the instants that stamp it."""
    from levibot.messages import OrderIntent

    if isinstance(msg, OrderIntent):
        return ("intent", msg.side.value, msg.quantity, msg.price, msg.stop_loss, msg.take_profit)
    return ("denied", msg.code)


async def rebuild(conn: Any, settings: Any, until_ns: int) -> Rebuilt:
    """Fold the events created by ``until_ns`` into a portfolio and a risk state."""
    import structlog

    from levibot.actors.risk import RiskActor
    from levibot.clock import ReplayClock
    from levibot.execution import Portfolio
    from levibot.messages import (
        Bar,
        Fill,
        Message,
        OrderDenied,
        OrderIntent,
        PortfolioSnapshot,
        Quote,
        Tick,
    )
    from levibot.metrics import Metrics
    from levibot.runtime.actor import ActorContext
    from levibot.storage.events import EventPage, read_events

    order_cfg = settings.actor_config("order")
    risk_cfg = msgspec.structs.replace(settings.actor_config("risk"), persist=False)
    portfolio = Portfolio(
        order_cfg.cash, curve_max=order_cfg.equity_curve_max, qty_step=order_cfg.qty_step
    )
    fee_rate = order_cfg.fee_bps / 1e4  # as the paper venue has it
    decided: dict[str, Message] = {}  # the risk actor's decisions in this rebuild

    async def collect(msg: Message) -> None:
        if isinstance(msg, OrderIntent | OrderDenied):
            decided[msg.client_order_id] = msg

    clock = ReplayClock()
    ctx = ActorContext(
        name="risk", publish=collect, clock=clock, metrics=Metrics(),
        log=structlog.get_logger().bind(actor="risk", replay="events"), config=risk_cfg,
    )  # fmt: skip
    risk = RiskActor(ctx, risk_cfg)
    await risk.on_start()
    intents: dict[str, OrderIntent] = {}
    diverged = _Divergences()
    counts = EventPage()
    events = 0
    async for ev in in_causal_order(read_events(conn, until_ns=until_ns, counts=counts)):
        msg = ev.message
        events += 1
        clock.observe(msg.ts_event)
        if isinstance(msg, risk.consumes):
            await risk.handle(msg)
        match msg:
            case OrderIntent():
                intents[msg.client_order_id] = msg
                _check_decision(decided, msg, ev.seq, diverged)
            case OrderDenied():
                _check_decision(decided, msg, ev.seq, diverged)
            case Fill():
                intent = intents.pop(msg.client_order_id, None)
                got = portfolio.apply(
                    msg.symbol, msg.side, msg.quantity, msg.price, fee_rate, msg.ts_event, intent
                )
                want = (msg.quantity, msg.fee, msg.realized_pnl, msg.position_after)
                if (
                    got is None
                    or (got.quantity, got.fee, got.realized_pnl, got.position_after) != want
                ):
                    diverged.add(f"seq {ev.seq}: fill {msg.fill_id} logged {want}, rebuilt {got}")
            case PortfolioSnapshot():
                for pos in msg.positions:
                    portfolio.mark(pos.symbol, pos.last_price)
            case Bar():
                portfolio.mark(msg.symbol, msg.close)
            case Tick():
                portfolio.mark(msg.symbol, msg.price)
            case Quote():
                portfolio.mark(msg.symbol, (msg.bid + msg.ask) / 2.0)
            case _:
                pass
    return Rebuilt(
        until_ns=until_ns, events=events, last_seq=counts.last_seq, bad_rows=counts.bad,
        portfolio=portfolio_at(portfolio), risk=risk_at(risk.engine.state),
        diverged=diverged.count, divergences=diverged.items,
    )  # fmt: skip


async def in_causal_order(
    events: AsyncIterator[Any], window_ns: int = 10 * 10**9
) -> AsyncIterator[Any]:
    """Yield the log's events in the order they were created, as the actors beside each
    producer saw them, rather than the order the store heard them.

    Across processes the store hears fills over JetStream and snapshots, bars and signals over
    core NATS, so an event can reach the log behind others created after it. The events are
    put back in ``ts_init`` order (the producer's instant; ties keep the log's order) within
    ``window_ns`` of creation time; then a portfolio snapshot goes after the order actor's
    messages of its own instant, which that actor published ahead of it. A single process's log
    is already in this order (replay stamps with event time, which only grows) and stays so.
    """
    async for ev in _snapshots_last(_by_creation(events, window_ns)):
        yield ev


async def _by_creation(events: AsyncIterator[Any], window_ns: int) -> AsyncIterator[Any]:
    heap: list[tuple[int, int, Any]] = []
    newest = -(2**63)
    async for ev in events:
        created = ev.message.ts_init
        heapq.heappush(heap, (created, ev.seq, ev))
        newest = max(newest, created)
        while heap and heap[0][0] < newest - window_ns:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


async def _snapshots_last(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    from levibot.messages import Fill, OrderAccepted, OrderClosed, PortfolioSnapshot

    held: Any = None
    async for ev in events:
        msg = ev.message
        if held is not None:
            snap = held.message
            if (
                isinstance(msg, Fill | OrderAccepted | OrderClosed)
                and msg.ts_init == snap.ts_init
                and msg.ts_event <= snap.ts_event
            ):
                yield ev  # published before the snapshot that already counts it
                continue
            yield held
            held = None
        if isinstance(msg, PortfolioSnapshot):
            held = ev
        else:
            yield ev
    if held is not None:
        yield held


def _check_decision(decided: dict[str, Any], logged: Any, seq: int, out: _Divergences) -> None:
    """Compare a logged intent or denial with the rebuilt risk actor's decision."""
    if logged.strategy == "exit":
        return  # an exit rule's order: the order actor's, not the risk engine's
    mine = decided.pop(logged.client_order_id, None)
    if mine is None:
        out.add(f"seq {seq}: {logged.client_order_id} logged, the rebuild decided nothing")
    elif _decision(mine) != _decision(logged):
        out.add(
            f"seq {seq}: {logged.client_order_id} logged {_decision(logged)}, "
            f"rebuilt {_decision(mine)}"
        )


# -- the command ------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Register ``levibot events``."""
    parser = sub.add_parser(
        "events", help="read the store's event log (PostgreSQL)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    events_sub = parser.add_subparsers(dest="events_command", metavar="ACTION")
    p = events_sub.add_parser(
        "replay",
        help="rebuild the portfolio and risk state at an instant from the event log",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument(
        "--until", metavar="TIME", default="",
        help="the instant: ISO 8601 (UTC unless stated) or ns since the epoch (default: now)",
    )  # fmt: skip
    p.add_argument("--dsn", default="", help="PostgreSQL DSN (default: the config's postgres_dsn)")
    p.set_defaults(func=replay)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def replay(args: argparse.Namespace) -> int:
    """Rebuild the state at ``--until`` and print it as JSON."""
    import anyio

    from levibot.logging import configure
    from levibot.settings import load_settings

    configure("warning", "auto")
    until = parse_instant(args.until) if args.until else _now_ns()
    from levibot.commands.db import resolve_dsn

    config = config_path(args)
    settings = load_settings(config, environ=os.environ)
    dsn = resolve_dsn(args.dsn, settings=settings)
    result = anyio.run(_replay, dsn, settings, until)
    sys.stdout.write(json.dumps(_jsonable(msgspec.to_builtins(result)), indent=2) + "\n")
    return 0


def _now_ns() -> int:
    import time

    return time.time_ns()


async def _replay(dsn: str, settings: Any, until: int) -> Rebuilt:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The DSN may hold a password: name the error, not the DSN.
        raise LevibotError(f"cannot connect to PostgreSQL: {exc}") from None
    try:
        return await rebuild(conn, settings, until)
    finally:
        await conn.close()


def _jsonable(value: Any) -> Any:
    """Return ``value`` with non-finite floats as strings (JSON has no inf/NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value

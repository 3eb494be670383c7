"""Plain-text renderings of read models and pushes (no parse mode: nothing to escape)."""

from __future__ import annotations

from datetime import UTC, datetime

from levibot.messages import Alert, AlertLevel, Fill, OrderClosed, OrderDenied, Signal, SignalSide
from sidecars.telegram.readmodel import OrderEvent, ReadModel

HELP = """levibot commands
/status - engine and bot status
/signals [SYMBOL] - latest signals
/subscribe SYMBOL - push signals for SYMBOL (ALL for every symbol)
/unsubscribe SYMBOL - stop pushes for SYMBOL (ALL for every symbol)
/subscriptions - what this chat follows
/portfolio - cash, equity and open positions
/pnl - realised and unrealised PnL, drawdown
/orders - recent fills, exits and denials
/risk - kill switch, trading state, exposure
/models - strategies and models producing signals
/notify KIND on|off - KIND is signals, alerts, fills or denials
/killswitch on|off - stop or resume all trading (admins)
/cancel ORDER_ID [SYMBOL] - cancel an open order (admins)
/activate MODEL_ID [force] - serve a model, persisted (admins)
/rollback - back to the model served before (admins)
/trading active|reducing|halted - set the trading state (admins)"""

_SIDE_MARK = {SignalSide.LONG: "🟢", SignalSide.SHORT: "🔴", SignalSide.FLAT: "⚪"}
_LEVEL_MARK = {AlertLevel.INFO: "ℹ️", AlertLevel.WARNING: "⚠️", AlertLevel.CRITICAL: "🚨"}


def when(ts_ns: int) -> str:
    """Return ``ts_ns`` as a UTC date and time ("-" when unknown)."""
    if ts_ns <= 0:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def money(value: float) -> str:
    """Return ``value`` with thousands separators and two decimals."""
    return f"{value:,.2f}"


def signal_line(s: Signal) -> str:
    """Return one signal as a line."""
    return (
        f"{_SIDE_MARK.get(s.side, '')} {s.symbol} {s.side.value.upper()} · {s.strategy} · "
        f"p={s.probability:.2f} conf={s.confidence:.2f} @ {money(s.price)}"
    )


def order_line(o: OrderEvent) -> str:
    """Return one fill, exit or denial as a line."""
    match o:
        case Fill():
            pnl = f" pnl={money(o.realized_pnl)}" if o.realized_pnl else ""
            return (
                f"✅ FILL {o.symbol} {o.side.value.upper()} {o.quantity:g} @ {money(o.price)}"
                f" fee={money(o.fee)}{pnl} ({o.reason})"
            )
        case OrderClosed():
            return (
                f"🏁 CLOSED {o.symbol} by {o.reason} @ {money(o.exit_price)}"
                f" pnl={money(o.realized_pnl)}"
            )
        case OrderDenied():
            return f"⛔ DENIED {o.symbol} [{o.code}] {o.reason}"
    return str(o)


def alert_line(a: Alert) -> str:
    """Return one alert as a line."""
    return f"{_LEVEL_MARK.get(a.level, '')} {a.level.value.upper()} from {a.source}: {a.text}"


def signals_text(rm: ReadModel, symbol: str | None = None, limit: int = 10) -> str:
    """Return the latest signal per strategy and symbol (optionally one symbol)."""
    latest = [s for s in rm.latest_signal.values() if symbol is None or s.symbol == symbol]
    if not latest:
        return f"No signals yet{' for ' + symbol if symbol else ''}."
    latest.sort(key=lambda s: s.ts_event, reverse=True)
    lines = [signal_line(s) + f" ({when(s.ts_event)})" for s in latest[:limit]]
    return "Latest signals\n" + "\n".join(lines)


def portfolio_text(rm: ReadModel) -> str:
    """Return cash, equity and open positions."""
    p = rm.portfolio
    if p is None:
        return "No portfolio snapshot yet."
    lines = [
        f"Portfolio at {when(p.ts_event)}",
        f"Equity {money(p.equity)} · cash {money(p.cash)}",
        f"Open positions: {len(p.positions)}",
    ]
    for pos in p.positions:
        lines.append(
            f"• {pos.symbol} {pos.quantity:g} @ {money(pos.avg_price)} "
            f"last {money(pos.last_price)} uPnL {money(pos.unrealized_pnl)}"
        )
    return "\n".join(lines)


def pnl_text(rm: ReadModel) -> str:
    """Return realised and unrealised PnL, fees, return since start and drawdown."""
    p = rm.portfolio
    if p is None:
        return "No portfolio snapshot yet."
    start = rm.start_equity or p.equity
    ret = (p.equity / start - 1.0) * 100 if start else 0.0
    return "\n".join(
        [
            f"PnL at {when(p.ts_event)}",
            f"Realised {money(p.realized_pnl)} · unrealised {money(p.unrealized_pnl)}",
            f"Fees {money(p.fees)}",
            f"Equity {money(p.equity)} ({ret:+.2f}% since the bot started)",
            f"Drawdown from peak {rm.drawdown * 100:.2f}% (peak {money(rm.peak)})",
        ]
    )


def orders_text(rm: ReadModel, limit: int = 10) -> str:
    """Return the most recent order events."""
    if not rm.orders:
        return "No orders yet."
    recent = list(rm.orders)[-limit:][::-1]
    return "Recent orders\n" + "\n".join(f"{order_line(o)} ({when(o.ts_event)})" for o in recent)


def risk_text(rm: ReadModel) -> str:
    """Return the commanded risk state, exposure and denial counts."""
    r = rm.risk
    ks = (
        "unknown" if r.kill_switch is None else ("ON (trading stopped)" if r.kill_switch else "off")
    )
    state = r.trading_state.value if r.trading_state is not None else "unknown"
    lines = [
        f"Kill switch: {ks}",
        f"Trading state: {state}",
        f"Exit policy: {r.policy or 'unknown'}",
        f"Gross exposure: {money(rm.gross_exposure)}",
        f"Drawdown from peak: {rm.drawdown * 100:.2f}%",
    ]
    if r.changed_by:
        lines.append(f"Last change by {r.changed_by} at {when(r.changed_ns)}")
    if rm.denials:
        codes = ", ".join(f"{code} x{n}" for code, n in rm.denials.most_common(5))
        lines.append(f"Denials: {codes}")
    return "\n".join(lines)


def models_text(rm: ReadModel) -> str:
    """Return the strategies and models seen producing signals."""
    if not rm.models:
        return "No strategy has produced a signal yet."
    lines = ["Strategies and models (from recent signals)"]
    for (strategy, model_id), ts in sorted(rm.models.items(), key=lambda kv: -kv[1]):
        lines.append(f"• {strategy}: {model_id or 'rule-based'} (last signal {when(ts)})")
    return "\n".join(lines)

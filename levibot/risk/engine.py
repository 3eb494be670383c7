"""The risk engine: pure decision logic over ``RiskState``, no event loop, no I/O.

Equity: the ONE portfolio lives in the order actor. The engine keeps no notion of equity of its
own: its book is the order actor's last ``PortfolioSnapshot`` with the ``Fill``s seen since
applied on top (cash and ``Fill.position_after``), and equity is ``cash + Σ qty · last price``
exactly as the portfolio computes it. A fill older than the last snapshot (``ts_event`` before
the snapshot's) is taken as already inside it: the order actor snapshots after every fill.
Positions are set from ``Fill.position_after`` (idempotent); only cash is additive, and the
next snapshot corrects it should a snapshot and a fill of the same instant cross on the wire.

Conventions (documented in the report and in ``decide_signal``):
- spot, long only: LONG with no position buys, FLAT/SHORT with a long position sells it all
  (reduce-only), LONG while long or with an entry pending does nothing (no pyramiding);
- approved but unfilled orders count as position (``pending``), so a signal is never doubled;
- checks run in ``codes.CHECK_ORDER``; reducing orders skip the checks meant to stop new risk;
- day boundaries are UTC days of the clock (event time in replay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from levibot import valuation
from levibot.messages import (
    Bar,
    Fill,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Side,
    Signal,
    SignalSide,
    SubmitOrder,
    TradingState,
)
from levibot.risk.checks import Exposure, NsLimits, entry_checks, gate_checks
from levibot.risk.codes import DenyCode
from levibot.risk.limits import EXIT_POLICIES, ExitPolicy, RiskLimits
from levibot.risk.sizing import SizingParams, floor_step, size_entry
from levibot.risk.state import RECENT_IDS, BookPosition, PendingOrder, RiskState

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
EPS = 1e-12


@dataclass(frozen=True, slots=True)
class Breach:
    """A limit crossed by what happened (not by an order): the actor alerts and halts."""

    code: DenyCode
    text: str


@dataclass(slots=True)
class _Order:
    symbol: str
    side: Side
    quantity: float  # 0.0: size it
    price: float
    reducing: bool
    strategy: str
    client_order_id: str
    reason: str
    ts_event: int
    ts_ingress: int
    confidence: float | None = None
    spread_bps: float | None = None
    probability: float = 0.5
    atr: float = 0.0
    invalid: tuple[DenyCode, str] | None = None  # a malformed manual order, denied at step 5
    limit_price: float = 0.0  # a manual order's limit; 0.0: at market


class RiskEngine:
    """Decide signals and manual orders; follow fills and snapshots; hold the risk state."""

    def __init__(
        self,
        limits: RiskLimits,
        sizing: SizingParams,
        *,
        initial_equity: float,
        state: RiskState | None = None,
        max_hold_s: float = 0.0,
        halt_on_breach: bool = True,
        pending_timeout_s: float = 0.0,
        atr_exits: bool = True,
        max_price_age_s: float = 0.0,
    ) -> None:
        self.limits = limits
        self.sizing = sizing
        self.max_hold_ns = int(max_hold_s * NS_PER_S)
        self.halt_on_breach = halt_on_breach
        self.pending_timeout_ns = int(pending_timeout_s * NS_PER_S)
        self.atr_exits = atr_exits
        self.max_price_age_ns = int(max_price_age_s * NS_PER_S)
        self._ns = NsLimits.of(limits)
        if state is None:
            state = RiskState(cash=initial_equity, peak_equity=initial_equity)
        self.state = state
        self._decided = set(state.decided)
        self._seen_fills = set(state.seen_fills)
        #: True when the state changed in a way that must be persisted.
        self.dirty = False

    # ---- the book ------------------------------------------------------------------------
    @property
    def equity(self) -> float:
        """Return cash plus every position at its last price (the portfolio's formula)."""
        return valuation.equity(self.state.cash, self.state.positions.values())

    @property
    def drawdown(self) -> float:
        """Return ``(peak - equity) / peak``; 0 at or above the peak: profits are never drawdown."""
        return valuation.drawdown(self.state.peak_equity, self.equity)

    @property
    def policy(self) -> ExitPolicy:
        """Return the active exit policy."""
        return EXIT_POLICIES[self.state.policy]

    def position(self, symbol: str) -> float:
        """Return the expected position: filled quantity plus approved pending orders."""
        pos = self.state.positions.get(symbol)
        qty = pos.quantity if pos is not None else 0.0
        pending = self.state.pending
        if pending:
            for p in pending.values():
                if p.symbol == symbol:
                    qty += p.quantity
        return qty

    def expire_pending(self, now: int) -> list[str]:
        """Forget approved orders unfilled for ``pending_timeout_s``; return their ids.

        An intent lost on its way to the order actor would otherwise count as position
        forever and block the symbol."""
        limit, pending = self.pending_timeout_ns, self.state.pending
        if limit <= 0 or not pending:
            return []
        stale = [coid for coid, p in pending.items() if now - p.ts >= limit]
        for coid in stale:
            del pending[coid]
        if stale:
            self.dirty = True
        return stale

    def _exposure(self) -> float:
        s = self.state
        exposure = valuation.gross_exposure(s.positions.values())
        if s.pending:  # approved orders not yet filled count at their order price
            exposure += sum(abs(p.quantity * p.price) for p in s.pending.values())
        return exposure

    def _open_symbols(self, other_than: str) -> int:
        s = self.state
        syms = {sym for sym, p in s.positions.items() if p.quantity > EPS}
        if s.pending:
            syms.update(p.symbol for p in s.pending.values() if p.quantity > 0)
        syms.discard(other_than)
        return len(syms)

    def _track_peak(self) -> float:
        """Raise the peak to the equity if above it; return the equity (``_breaches`` takes it)."""
        equity = self.equity
        if equity > self.state.peak_equity:
            self.state.peak_equity = equity
            self.dirty = True
        return equity

    def roll_day(self, now: int) -> None:
        """Reset the daily counters when ``now`` is in a new UTC day."""
        day = now // NS_PER_DAY
        if day != self.state.day:
            s = self.state
            s.day, s.day_trades, s.day_realized = day, 0, 0.0
            s.day_start_equity = self.equity
            self.dirty = True

    # ---- commands ------------------------------------------------------------------------
    def set_kill_switch(self, on: bool) -> None:
        """Turn the kill switch on or off."""
        self.state.kill_switch = on
        self.dirty = True

    def set_trading_state(self, state: TradingState) -> None:
        """Move to ``state``. Resuming (ACTIVE) while in a drawdown breach re-bases the peak
        to the current equity: the operator acknowledges the loss, or nothing could trade."""
        lim = self.limits.max_drawdown_pct
        if state is TradingState.ACTIVE and lim > 0 and self.drawdown >= lim:
            self.state.peak_equity = self.equity
        self.state.trading_state = state
        self.dirty = True

    def set_policy(self, name: str) -> bool:
        """Switch the exit policy; return False (and change nothing) for an unknown name."""
        if name not in EXIT_POLICIES:
            return False
        self.state.policy = name
        self.dirty = True
        return True

    # ---- the market --------------------------------------------------------------------------
    def on_bar(self, bar: Bar, now: int) -> None:
        """Take ``bar``'s close as the market price of its symbol (manual orders size at it)."""
        self.mark(bar.symbol, bar.close, now)

    def mark(self, symbol: str, price: float, now: int) -> None:
        """Record ``price`` as the market price of ``symbol`` at ``now`` (ignored if unusable)."""
        if math.isfinite(price) and price > 0:
            self.state.last_price[symbol] = price
            self.state.last_price_ns[symbol] = now

    def market_price(self, symbol: str, now: int) -> float | None:
        """Return the last market price of ``symbol``; None if unknown or older than allowed."""
        price = self.state.last_price.get(symbol)
        if price is None:
            return None
        age_limit = self.max_price_age_ns
        if age_limit > 0 and now - self.state.last_price_ns.get(symbol, 0) > age_limit:
            return None
        return price

    # ---- events from the order actor ------------------------------------------------------
    def on_snapshot(self, snap: PortfolioSnapshot, now: int) -> list[Breach] | None:
        """Replace the book by the order actor's snapshot; return the limits it breaches.

        None: ``snap`` was refused, a number in it is not finite (the caller reports bad input).
        """
        s = self.state
        if not sane_snapshot(snap):
            return None
        if snap.ts_event < s.snapshot_ts:
            return []  # a stale snapshot overtaken on the wire
        s.cash = snap.cash
        s.positions = {
            p.symbol: BookPosition(quantity=p.quantity, last_price=p.last_price)
            for p in snap.positions
            if p.quantity > EPS
        }
        first = s.snapshot_ts < 0
        s.snapshot_ts = snap.ts_event
        self.roll_day(now)
        if first:
            # The first snapshot ever is the portfolio's real starting point: ``initial_equity``
            # was only a placeholder, and must not read as a drawdown (or a profit).
            s.peak_equity = s.day_start_equity = self.equity
            self.dirty = True
        return self._breaches(None, self._track_peak())

    def on_fill(self, fill: Fill, now: int) -> list[Breach]:
        """Apply a fill to the book and the counters (once per ``fill_id``); return breaches."""
        if fill.fill_id in self._seen_fills or not sane_fill(fill):
            return []
        self._remember(self.state.seen_fills, self._seen_fills, fill.fill_id)
        s = self.state
        s.pending.pop(fill.client_order_id, None)
        if fill.ts_event >= s.snapshot_ts:
            gross = fill.quantity * fill.price
            s.cash += -gross - fill.fee if fill.side is Side.BUY else gross - fill.fee
            if fill.position_after > EPS:
                s.positions[fill.symbol] = BookPosition(
                    quantity=fill.position_after, last_price=fill.price
                )
            else:
                s.positions.pop(fill.symbol, None)
        self.mark(fill.symbol, fill.price, now)
        self.roll_day(now)
        s.day_realized += fill.realized_pnl
        if fill.realized_pnl < 0:
            s.last_loss_ns[fill.symbol] = fill.ts_event
            s.last_loss_global_ns = max(s.last_loss_global_ns, fill.ts_event)
        if fill.reason == "stop_loss":
            s.last_stop_ns[fill.symbol] = fill.ts_event
            s.last_stop_global_ns = max(s.last_stop_global_ns, fill.ts_event)
        equity = self._track_peak()
        self.dirty = True
        return self._breaches(fill, equity)

    def on_closed(self, closed: OrderClosed) -> None:
        """Forget a pending order the venue closed without filling (rejected)."""
        if self.state.pending.pop(closed.client_order_id, None) is not None:
            self.dirty = True

    def _breaches(self, fill: Fill | None, equity: float) -> list[Breach]:
        s, lim = self.state, self.limits
        out: list[Breach] = []
        if s.trading_state is TradingState.HALTED or not self.halt_on_breach:
            return out
        # ``self.drawdown`` with the equity at hand, and only under a limit (once per bar).
        if lim.max_drawdown_pct > 0 and (
            (drawdown := valuation.drawdown(s.peak_equity, equity)) >= lim.max_drawdown_pct
        ):
            out.append(
                Breach(
                    DenyCode.MAX_DRAWDOWN,
                    f"drawdown {drawdown:.2%} from peak "
                    f"{s.peak_equity:.2f} reached the limit {lim.max_drawdown_pct:.2%}",
                )
            )
        loss_cap = lim.max_daily_loss_pct * s.day_start_equity
        # Only a fill can cross the daily-loss limit (it is realised PnL).
        if (
            fill is not None
            and fill.realized_pnl < 0
            and lim.max_daily_loss_pct > 0
            and -s.day_realized >= loss_cap > 0
        ):
            out.append(
                Breach(
                    DenyCode.DAILY_LOSS,
                    f"realised loss today {-s.day_realized:.2f} reached the limit {loss_cap:.2f}",
                )
            )
        if out:
            s.trading_state = TradingState.HALTED
            self.dirty = True
        return out

    # ---- decisions -----------------------------------------------------------------------
    def decide_signal(self, sig: Signal, now: int) -> OrderIntent | OrderDenied | None:
        """Map a signal to an intent, a denial, or nothing (no position change wanted).

        Client order id ``f"{strategy}-{symbol}-{ts_event}"``: a replay gives the same ids and
        a re-delivered signal is recognised and ignored.
        """
        coid = f"{sig.strategy}-{sig.symbol}-{sig.ts_event}"
        if coid in self._decided:
            return None
        self.mark(sig.symbol, sig.price, now)
        if math.isfinite(sig.atr) and sig.atr > 0:
            self.state.last_atr[sig.symbol] = sig.atr
        self.expire_pending(now)
        held = self.position(sig.symbol)
        if sig.side is SignalSide.LONG:
            if held > EPS:
                return None  # already long (or buying): no pyramiding
            side, qty, reducing = Side.BUY, 0.0, False
        else:
            if held <= EPS:
                return None  # flat already; spot is long-only, SHORT means "hold nothing"
            side, qty, reducing = Side.SELL, held, True
        order = _Order(
            symbol=sig.symbol,
            side=side,
            quantity=qty,
            price=sig.price,
            reducing=reducing,
            strategy=sig.strategy,
            client_order_id=coid,
            reason="signal",
            ts_event=sig.ts_event,
            ts_ingress=sig.ts_ingress,
            confidence=sig.confidence,
            spread_bps=sig.spread_bps,
            probability=sig.probability,
            atr=sig.atr,
        )
        decision = self._check(order, now, held)
        # Remembered once decided (a check that raised leaves the signal to its redelivery).
        # A denial changes nothing worth a disk write on its own: the decided id is saved
        # with the next change that matters.
        self._remember(self.state.decided, self._decided, coid)
        return decision

    def decide_manual(self, cmd: SubmitOrder, now: int) -> OrderIntent | OrderDenied | None:
        """Run a manual order through the same checks (no confidence or spread to check).

        The order is sized and checked at the market price the engine knows (the last bar
        close, signal or fill of the symbol), never at a price the caller sent: ``cmd.price``
        is a limit only. It is refused when no market price is known (or it is older than
        ``max_price_age_s``) and when the limit is further than ``max_price_deviation_pct``
        from the market. The intent carries the limit to the venue, which executes the order
        at once within it or closes it unfilled (immediate-or-cancel).

        A quantity of 0 sizes a buy with the sizing mode (``kelly`` falls back to fixed
        notional: there is no probability) and sells the whole position.
        """
        coid = f"manual-{cmd.command_id}"
        if coid in self._decided:
            return None  # a re-delivered command
        market = self.market_price(cmd.symbol, now)
        self.expire_pending(now)
        held = self.position(cmd.symbol)
        side = {"buy": Side.BUY, "sell": Side.SELL}.get(cmd.side.lower())
        order = _Order(
            symbol=cmd.symbol,
            side=side or Side.BUY,
            quantity=cmd.quantity,
            price=market or 0.0,
            reducing=side is Side.SELL,
            strategy="manual",
            client_order_id=coid,
            reason="manual",
            ts_event=cmd.ts_event,
            ts_ingress=cmd.ts_ingress,
            probability=0.5,
            atr=self.state.last_atr.get(cmd.symbol, 0.0),
            limit_price=cmd.price,
        )
        if side is None:
            order.invalid = (DenyCode.BAD_ORDER, f"side {cmd.side!r} is not buy/sell")
        elif side is Side.SELL and held <= EPS:
            order.invalid = (DenyCode.SHORT_NOT_ALLOWED, "spot is long-only: nothing to sell")
        elif cmd.price != 0 and not (math.isfinite(cmd.price) and cmd.price > 0):
            order.invalid = (DenyCode.BAD_ORDER, f"limit price {cmd.price!r} is not > 0")
        elif market is None:
            order.invalid = (DenyCode.NO_PRICE, f"no current market price for {cmd.symbol}")
        elif cmd.price > 0 and (off := self._off_market(cmd.price, market)) is not None:
            order.invalid = (DenyCode.PRICE_OFF_MARKET, off)
        elif side is Side.SELL:
            order.quantity = held if cmd.quantity == 0 else cmd.quantity
        decision = self._check(order, now, held)
        self._remember(self.state.decided, self._decided, coid)  # once decided, as above
        return decision

    def _off_market(self, limit: float, market: float) -> str | None:
        """Return why ``limit`` is too far from ``market``, or None when it is close enough."""
        band = self.limits.max_price_deviation_pct
        deviation = abs(limit - market) / market
        if band > 0 and deviation > band:
            return (
                f"limit {limit:g} is {deviation:.2%} from the market price {market:g}"
                f" (at most {band:.2%})"
            )
        return None

    def _deny(self, o: _Order, now: int, code: DenyCode, reason: str) -> OrderDenied:
        return OrderDenied(
            ts_event=o.ts_event,
            ts_init=now,
            ts_ingress=o.ts_ingress,
            symbol=o.symbol,
            client_order_id=o.client_order_id,
            strategy=o.strategy,
            code=code.value,
            reason=reason,
        )

    def _check(self, o: _Order, now: int, held: float) -> OrderIntent | OrderDenied:
        s, lim = self.state, self.limits
        self.roll_day(now)
        entry = not o.reducing
        # 1-4: kill switch, trading state, confidence, submit rate
        denial = gate_checks(s, lim, self._ns, now, entry, o.confidence)
        if denial is not None:
            return self._deny(o, now, *denial)
        # 5: the order itself: price and size
        if o.invalid is not None:
            return self._deny(o, now, *o.invalid)
        if not (math.isfinite(o.price) and o.price > 0):
            return self._deny(o, now, DenyCode.NO_PRICE, f"no usable price for {o.symbol}")
        if o.quantity != 0 and not (math.isfinite(o.quantity) and o.quantity > 0):
            return self._deny(o, now, DenyCode.BAD_SIZE, f"quantity {o.quantity} is not > 0")
        equity = self.equity
        if o.reducing:
            qty = floor_step(min(o.quantity, held), self.sizing.qty_step)
        elif o.quantity > 0:
            qty = floor_step(o.quantity, self.sizing.qty_step)
        else:
            params = self.sizing
            if params.mode == "kelly" and o.reason == "manual":
                params = msgspec.structs.replace(params, mode="fixed_notional")
            size = size_entry(
                params,
                price=o.price,
                equity=equity,
                cash=s.cash,
                atr=o.atr,
                probability=o.probability,
                policy=self.policy,
                max_order_notional=lim.max_order_notional,
            )
            if size.quantity <= 0:
                return self._deny(o, now, DenyCode.BAD_SIZE, size.why)
            qty = size.quantity
        notional = qty * o.price
        if qty <= 0 or (entry and notional < lim.min_order_notional):
            return self._deny(
                o,
                now,
                DenyCode.BAD_SIZE,
                f"notional {notional:.2f} below minimum {lim.min_order_notional}",
            )
        # 6-16: the limits on new risk
        if entry:
            exposure = Exposure(
                symbol=o.symbol,
                notional=notional,
                held=max(held, 0.0),
                price=o.price,
                equity=equity,
                exposure=self._exposure(),
                open_symbols=self._open_symbols(o.symbol),
                spread_bps=o.spread_bps,
            )
            denial = entry_checks(s, lim, self._ns, now, exposure)
            if denial is not None:
                return self._deny(o, now, *denial)
        return self._approve(o, now, qty)

    def _approve(self, o: _Order, now: int, qty: float) -> OrderIntent:
        s = self.state
        if self.limits.max_orders_per_window > 0:
            s.order_times.append(now)
        s.last_trade_ns[o.symbol] = now
        signed = qty if o.side is Side.BUY else -qty
        s.pending[o.client_order_id] = PendingOrder(
            symbol=o.symbol, quantity=signed, price=o.price, ts=now
        )
        sl = tp = 0.0
        hold = 0
        if not o.reducing:
            s.day_trades += 1
            hold = self.max_hold_ns
            if self.atr_exits and o.atr > 0:
                pol = self.policy
                sl, tp = o.price - pol.sl_atr * o.atr, o.price + pol.tp_atr * o.atr
        self.dirty = True
        cap = self.limits.max_order_notional
        bound = 0.0 if o.reducing or cap <= 0 else cap * (1 + self.limits.max_price_deviation_pct)
        return OrderIntent(
            ts_event=o.ts_event,
            ts_init=now,
            ts_ingress=o.ts_ingress,
            symbol=o.symbol,
            client_order_id=o.client_order_id,
            strategy=o.strategy,
            side=o.side,
            quantity=qty,
            price=o.price,
            stop_loss=max(sl, 0.0),
            take_profit=tp,
            max_hold_ns=hold,
            reduce_only=o.reducing,
            reason=o.reason,
            limit_price=o.limit_price,
            max_notional=bound,
        )

    @staticmethod
    def _remember(order: list[str], seen: set[str], key: str) -> None:
        order.append(key)
        seen.add(key)
        if len(order) > 2 * RECENT_IDS:  # trim in bulk: amortised O(1) per id
            for old in order[:RECENT_IDS]:
                seen.discard(old)
            del order[:RECENT_IDS]


def sane_snapshot(snap: PortfolioSnapshot) -> bool:
    """Return True when every number the engine reads from ``snap`` is finite."""
    isfinite = math.isfinite
    if not isfinite(snap.cash):
        return False
    for p in snap.positions:  # noqa: SIM110  (a loop, not all(genexpr): once or twice per bar)
        if not (isfinite(p.quantity) and isfinite(p.last_price)):
            return False
    return True


def sane_fill(fill: Fill) -> bool:
    """Return True when every number the engine reads from ``fill`` is finite."""
    return all(
        math.isfinite(x)
        for x in (fill.quantity, fill.price, fill.fee, fill.realized_pnl, fill.position_after)
    )

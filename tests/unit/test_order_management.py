"""The order actor on the Binance venue (the stand-in over real HTTP): order management and
reconciliation. Fills and partial fills, rejects by filter, cancels (command, timeout, kill
switch), a dropped user stream, and a restart while orders are open at the venue."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.clock import ReplayClock
from levibot.errors import ConfigError
from levibot.execution.binance import BinanceConfig, BinanceSpotClient
from levibot.messages import (
    Alert,
    Bar,
    CancelOrder,
    Fill,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    RiskStatus,
    Side,
    TradingState,
)
from levibot.testing import RecordingContext, eventually
from tests.fakes.binance_spot import BinanceSpot, rules, serving

pytestmark = pytest.mark.anyio

KEY, SECRET = "test-key-0123456789", "test-secret-abcdefghijklmnopqrstuvwxyz"
H = 3_600 * 1_000_000_000
T0 = 1_700_006_400 * 1_000_000_000


@pytest.fixture
async def spot(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[BinanceSpot, str, str]]:
    monkeypatch.setenv("LEVIBOT_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("LEVIBOT_BINANCE_API_SECRET", SECRET)
    s = BinanceSpot(api_key=KEY, api_secret=SECRET, fee_in_quote=True)
    s.symbols["BTCUSDT"] = rules("BTCUSDT", "BTC", "USDT")
    s.balances["USDT"] = [Decimal("10000"), Decimal(0)]
    s.price["BTCUSDT"] = 100.0
    async with serving(s) as (rest, ws):
        yield s, rest, ws


class Harness:
    def __init__(self, tmp: Path, rest: str, ws: str, **cfg: Any) -> None:
        self.clock = ReplayClock()
        self.ctx = RecordingContext("order", clock=self.clock)
        binance = BinanceConfig(base_url=rest, ws_url=ws, symbols=("BTCUSDT",),
                                reconnect_max_s=0.2, **cfg.pop("binance", {}))  # fmt: skip
        config = OrderConfig(venue="binance", binance=binance, state_dir=str(tmp), fsync=False,
                             **cfg)  # fmt: skip
        self.actor = OrderActor(self.ctx, config)

    async def send(self, msg: Any) -> None:
        self.clock.observe(msg.ts_event)
        await self.actor.handle(msg)

    def of(self, t: type[Any]) -> list[Any]:
        return self.ctx.of_type(t)


async def started(tmp: Path, spot: tuple[BinanceSpot, str, str], **cfg: Any) -> Harness:
    h = Harness(tmp, spot[1], spot[2], **cfg)
    await h.actor.on_start()
    return h


def intent(ts: int, qty: float, side: Side = Side.BUY, limit: float = 0.0, coid: str = "",
           price: float = 100.0) -> OrderIntent:  # fmt: skip
    return OrderIntent(
        ts_event=ts, ts_init=ts, symbol="BTCUSDT", client_order_id=coid or f"s-{ts}",
        strategy="s", side=side, quantity=qty, price=price, limit_price=limit,
    )  # fmt: skip


def bar(i: int, close: float) -> Bar:
    return Bar(ts_event=T0 + (i + 1) * H, ts_init=T0 + (i + 1) * H, symbol="BTCUSDT",
               venue="binance", timeframe="1h", start=T0 + i * H, open=close, high=close,
               low=close, close=close, volume=1.0)  # fmt: skip


# ---- fills --------------------------------------------------------------------------------
async def test_a_market_order_fills_from_the_venues_answer_with_its_fee(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(bar(0, 100.0))
        await h.send(intent(T0 + H, 2.0))
        [acc] = h.of(OrderAccepted)
        [f] = h.of(Fill)
        assert acc.client_order_id == f.client_order_id == f"s-{T0 + H}"
        assert (f.fill_id, f.quantity, f.price, f.position_after) == (f"s-{T0 + H}:f1", 2, 100, 2)
        assert f.fee == pytest.approx(0.2)  # what the venue charged: 0.1 % in USDT
        snap = h.of(PortfolioSnapshot)[-1]
        assert snap.cash == pytest.approx(10_000 - 200 - 0.2)
        assert snap.cash == pytest.approx(float(s.balances["USDT"][0]))  # the venue agrees
        assert not h.actor.orders  # filled: nothing open
    finally:
        await h.actor.on_stop()


async def test_a_resting_limit_order_fills_in_parts_from_the_stream_then_is_cancelled(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(intent(T0, 3.0, limit=95.0, coid="lim-1"))
        assert len(h.of(OrderAccepted)) == 1 and not h.of(Fill)
        await s.trade("BTCUSDT", 94.0, qty=1.0)
        await s.trade("BTCUSDT", 94.5, qty=0.5)
        await eventually(lambda: len(h.of(Fill)) == 2)
        f1, f2 = h.of(Fill)
        assert (f1.fill_id, f1.quantity, f1.price) == ("lim-1:f1", 1.0, 95.0)
        assert (f2.fill_id, f2.quantity, f2.position_after) == ("lim-1:f2", 0.5, 1.5)
        assert h.actor.orders["lim-1"].executed == pytest.approx(1.5)
        await h.send(CancelOrder(ts_event=T0 + 1, ts_init=T0 + 1, command_id="x1",
                                 issued_by="admin", client_order_id="lim-1"))  # fmt: skip
        [closed] = h.of(OrderClosed)
        assert (closed.client_order_id, closed.reason) == ("lim-1", "canceled")
        assert not s.open() and not h.actor.orders
        # What the venue holds is what the portfolio holds.
        snap = h.of(PortfolioSnapshot)[-1]
        assert snap.positions[0].quantity == pytest.approx(float(s.balances["BTC"][0]))
        assert snap.cash == pytest.approx(float(sum(s.balances["USDT"])))
        # An unknown id is said so, not ignored.
        await h.send(CancelOrder(ts_event=T0 + 2, ts_init=T0 + 2, command_id="x2",
                                 client_order_id="nope"))  # fmt: skip
        assert h.of(Alert)[-1].code == "CANCEL_UNKNOWN"
    finally:
        await h.actor.on_stop()


async def test_an_order_that_breaks_a_filter_is_rejected_without_reaching_the_venue(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(intent(T0, 0.01, coid="small"))  # 1 USDT: below the 5 USDT minimum
        [closed] = h.of(OrderClosed)
        assert (closed.client_order_id, closed.reason) == ("small", "rejected")
        assert "NOTIONAL" in h.of(Alert)[-1].text
        assert not h.of(OrderAccepted) and not s.orders
    finally:
        await h.actor.on_stop()


# ---- cancels by timeout and by the kill switch --------------------------------------------
async def test_the_kill_switch_and_the_timeout_cancel_open_orders(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot, order_timeout_s=3600.0)
    try:
        await h.send(intent(T0, 1.0, limit=90.0, coid="old"))
        await h.send(bar(0, 100.0))  # an hour later: "old" timed out
        assert [(c.client_order_id, c.reason) for c in h.of(OrderClosed)] == [("old", "canceled")]
        await h.send(intent(T0 + H, 1.0, limit=90.0, coid="a"))
        await h.send(intent(T0 + H, 1.0, limit=91.0, coid="b"))
        assert len(s.open()) == 2
        status = RiskStatus(ts_event=T0 + H, ts_init=T0 + H, kill_switch=True,
                            trading_state=TradingState.HALTED, policy="moderate",
                            equity=10_000.0, peak_equity=10_000.0, drawdown=0.0, day_trades=0,
                            day_realized_pnl=0.0)  # fmt: skip
        await h.send(status)
        assert not s.open() and not h.actor.orders
        assert {c.client_order_id for c in h.of(OrderClosed)} == {"old", "a", "b"}
    finally:
        await h.actor.on_stop()


async def test_a_cancel_the_venue_refuses_is_alerted_and_the_order_stays_open(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(intent(T0, 1.0, limit=90.0, coid="stuck"))
        s.ban, s.retry_after = 1, "7200"  # banned for two hours: not slept through
        await h.send(CancelOrder(ts_event=T0 + 1, ts_init=T0 + 1, command_id="k1",
                                 client_order_id="stuck"))  # fmt: skip
        alert = h.of(Alert)[-1]
        assert alert.code == "CANCEL_FAILED" and "418" in alert.text
        assert "stuck" in h.actor.orders and [o.client_order_id for o in s.open()] == ["stuck"]
        await h.send(CancelOrder(ts_event=T0 + 2, ts_init=T0 + 2, command_id="k2",
                                 client_order_id="stuck"))  # fmt: skip
        assert not s.open() and h.of(OrderClosed)[-1].reason == "canceled"
    finally:
        await h.actor.on_stop()


async def test_a_fill_from_the_user_stream_is_published_only_once_it_is_saved(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    import anyio

    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(intent(T0, 2.0, limit=95.0, coid="held"))
        saving, release = anyio.Event(), anyio.Event()
        write = h.actor._writer.save

        async def slow_save(data: bytes) -> None:  # the fsync of a loaded disk
            if "held" not in h.actor.orders:  # the save of the turn that filled it
                saving.set()
                await release.wait()
            await write(data)

        h.actor._writer.save = slow_save  # type: ignore[method-assign]
        await s.trade("BTCUSDT", 94.0)  # fills at the venue: the stream reports it
        await saving.wait()
        assert not h.of(Fill)  # a kill -9 now leaves no fill the state file lacks
        release.set()
        await eventually(lambda: len(h.of(Fill)) == 1)
    finally:
        release.set()  # a failed assertion must not leave the last save waiting
        await h.actor.on_stop()


# ---- reconciliation -----------------------------------------------------------------------
async def test_a_dropped_user_stream_reconnects_and_reconciles_what_it_missed(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(intent(T0, 2.0, limit=95.0, coid="lim-2"))
        assert h.actor.live is not None and h.actor.live.connects == 1
        await s.drop_streams()
        # While no socket is open the order fills: the stream cannot tell us.
        await s.trade("BTCUSDT", 94.0)
        await eventually(lambda: h.actor.live is not None and h.actor.live.connects == 2)
        await eventually(lambda: len(h.of(Alert)) == 1)  # the reconciliation's, after its fill
        [f] = h.of(Fill)
        assert (f.client_order_id, f.quantity, f.price) == ("lim-2", 2.0, 95.0)
        assert not h.actor.orders
        alert = h.of(Alert)[-1]
        assert alert.code == "VENUE_RECONCILED" and "reconnect" in alert.text
        assert "lim-2: 1 trade(s) applied" in alert.text
    finally:
        await h.actor.on_stop()


async def test_a_filled_order_whose_trades_were_not_applied_is_closed_by_reconciliation(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    h = await started(tmp_path, spot)
    try:
        await h.send(intent(T0, 2.0, limit=95.0, coid="lost"))
        h.actor.portfolio.state.cash = 0.0  # the trade cannot be applied here when it comes
        await s.trade("BTCUSDT", 94.0)
        await eventually(lambda: "lost" in h.actor.orders and h.actor.orders["lost"].trades)
        assert not h.of(Fill) and not h.of(OrderClosed)
        await s.drop_streams()  # the reconnect reconciles: FILLED there, the trade known here
        await eventually(lambda: len(h.of(Alert)) == 1)
        assert "lost" not in h.actor.orders
        [closed] = h.of(OrderClosed)  # risk forgets its pending order: no fill will come
        assert (closed.client_order_id, closed.reason) == ("lost", "filled")
        assert "lost: FILLED at the venue, ended here" in h.of(Alert)[-1].text
    finally:
        await h.actor.on_stop()


async def test_a_restart_while_orders_are_open_adopts_the_venues_truth(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, rest, _ = spot
    h = await started(tmp_path, spot)
    await h.send(intent(T0, 2.0, limit=95.0, coid="mine"))
    await h.actor.on_stop()
    saved = json.loads((tmp_path / "portfolio.json").read_bytes())
    assert [o["venue_id"] for o in saved["venue_orders"]] == ["mine"]
    # While we are down: half of ours fills, and someone places an order by hand.
    await s.trade("BTCUSDT", 94.0, qty=1.0)
    async with BinanceSpotClient(rest, KEY, SECRET) as client:
        await client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                               quantity="1", price="80", newClientOrderId="by-hand")  # fmt: skip
    h2 = await started(tmp_path, spot)
    try:
        [f] = h2.of(Fill)  # the missed half, applied once
        assert (f.fill_id, f.quantity, f.price) == ("mine:f1", 1.0, 95.0)
        assert set(h2.actor.orders) == {"mine", "by-hand"}
        assert h2.actor.orders["by-hand"].adopted
        [alert] = h2.of(Alert)
        assert alert.code == "VENUE_RECONCILED" and "by-hand: open at the venue, adopted" in (
            alert.text
        )
        # The portfolio is the venue's: cash (locked in open orders included) and position.
        snap = h2.of(PortfolioSnapshot)[-1]
        assert snap.cash == pytest.approx(float(sum(s.balances["USDT"])))
        assert snap.positions[0].quantity == pytest.approx(1.0)
        # The adopted order is ours to cancel now.
        await h2.send(CancelOrder(ts_event=T0 + 5, ts_init=T0 + 5, command_id="c9",
                                  client_order_id="by-hand"))  # fmt: skip
        assert [o.client_order_id for o in s.open()] == ["mine"]
    finally:
        await h2.actor.on_stop()
    # A third start finds nothing new: no new alert, no new fill (the outbox re-sends the
    # last ones under their ids, which the transport deduplicates).
    h3 = await started(tmp_path, spot)
    try:
        assert {a.alert_id for a in h3.of(Alert)} <= {a.alert_id for a in h2.of(Alert)}
        assert {f.fill_id for f in h3.of(Fill)} == {"mine:f1"}
    finally:
        await h3.actor.on_stop()


async def test_a_balance_that_differs_is_adopted_as_a_transfer(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str]
) -> None:
    s, *_ = spot
    s.balances["USDT"] = [Decimal("12500"), Decimal(0)]  # more than the configured 10,000
    h = await started(tmp_path, spot)
    try:
        [alert] = h.of(Alert)
        assert "cash 10000 -> 12500 USDT" in alert.text
        p = h.actor.portfolio
        assert p.state.cash == 12_500 and p.state.initial_cash == 12_500  # not a profit
    finally:
        await h.actor.on_stop()


# ---- configuration and secrets ------------------------------------------------------------
def test_live_trading_needs_live_true_and_the_testnet_is_the_default() -> None:
    assert BinanceConfig().base_url == "https://testnet.binance.vision"
    OrderConfig(venue="binance")  # the testnet: allowed
    live = BinanceConfig(base_url="https://api.binance.com")
    with pytest.raises(ValueError, match="live = true"):
        OrderConfig(venue="binance", binance=live)
    assert OrderConfig(venue="binance", binance=live, live=True).live
    assert OrderConfig().venue == "paper"


async def test_credentials_come_from_env_or_files_and_are_never_logged(
    tmp_path: Path, spot: tuple[BinanceSpot, str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    s = spot[0]
    monkeypatch.delenv("LEVIBOT_BINANCE_API_KEY")
    monkeypatch.delenv("LEVIBOT_BINANCE_API_SECRET")
    with pytest.raises(ConfigError, match="LEVIBOT_BINANCE_API_KEY"):
        await started(tmp_path, spot)
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "secret").write_text(SECRET + "\n")
    files = {"api_key_file": str(tmp_path / "key"), "api_secret_file": str(tmp_path / "secret")}
    h = await started(tmp_path / "state", spot, binance=files)
    try:
        await h.send(intent(T0, 1.0))
        assert len(h.of(Fill)) == 1
    finally:
        await h.actor.on_stop()
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert not any(SECRET in str(q) for _, _, q in s.requests)


# ---- one fee and one quantity step for risk and the venue (issue 17) ----------------------
def test_risk_sizes_with_the_venues_fee_and_step_and_may_not_set_others() -> None:
    from levibot.settings import load_settings

    s = load_settings(None, environ={}, overrides={"order": {"fee_bps": 7.5, "qty_step": 1e-5}})
    params = s.actor_config("risk").sizing_params()
    assert (params.fee_bps, params.qty_step) == (7.5, 1e-5)
    same = {"order": {"fee_bps": 7.5}, "risk": {"fee_bps": 7.5}}
    assert load_settings(None, environ={}, overrides=same).actor_config("risk").fee_bps == 7.5
    with pytest.raises(ConfigError, match=r"\[risk\] fee_bps = 5.0 differs from \[order\]") as e:
        load_settings(None, environ={}, overrides={"risk": {"fee_bps": 5.0}})
    assert e.value.path == "$.risk.fee_bps"


# ---- the cancel route ---------------------------------------------------------------------
async def test_the_gateway_cancel_route_publishes_cancel_order(tmp_path: Path) -> None:
    from tests.unit.test_gateway_support import running_gateway

    async with running_gateway(tmp_path) as g:
        url = g.url + "/orders/ema_cross-BTCUSDT-1700000000000000000/cancel"
        async with g.session.post(url, headers=g.h("trade")) as r:
            assert r.status == 202
            body = await r.json()
        [cmd] = g.ctx.of_type(CancelOrder)
        assert body == {"command_id": cmd.command_id, "command": "CancelOrder"}
        assert cmd.client_order_id == "ema_cross-BTCUSDT-1700000000000000000"
        assert cmd.issued_by == f"gateway:{g.key_ids['trade']}"
        async with g.session.post(g.url + "/orders/a%20b/cancel", headers=g.h("trade")) as r:
            assert r.status == 400
        async with g.session.post(url, headers=g.h("read")) as r:
            assert r.status == 403  # cancelling is trading
        assert len(g.ctx.of_type(CancelOrder)) == 1

"""The values behind the alerts and dashboards, in process: the risk actor's controls and
drawdown, the portfolio's exposure, the gateway's requests by route and status."""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.execution.portfolio import Holding, Portfolio, PortfolioState
from levibot.messages import PortfolioSnapshot, SetKillSwitch, SetTradingState, TradingState
from tests.unit.test_gateway_support import running_gateway
from tests.unit.test_risk_actor import T0, cmd, started


def snapshot(ts: int, equity: float) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_event=ts, ts_init=ts, cash=equity, equity=equity, realized_pnl=0.0,
        unrealized_pnl=0.0, fees=0.0,
    )  # fmt: skip


@pytest.mark.anyio
async def test_risk_exports_the_kill_switch_the_trading_state_and_the_drawdown(
    tmp_path: Path,
) -> None:
    h = await started(tmp_path, preset="off", max_drawdown_pct=0.2)
    m = h.ctx.metrics
    assert m.value("levibot_risk_kill_switch") == 0
    assert m.value("levibot_risk_drawdown_limit") == 0.2
    assert m.value("levibot_risk_trading_state", state="active") == 1
    assert m.value("levibot_risk_trading_state", state="halted") == 0
    await h.send(cmd(SetKillSwitch, T0, on=True))
    assert m.value("levibot_risk_kill_switch") == 1
    await h.send(snapshot(T0 + 1, 10_000.0))
    await h.send(snapshot(T0 + 2, 8_500.0))
    assert m.value("levibot_risk_drawdown") == pytest.approx(0.15)
    await h.send(cmd(SetTradingState, T0 + 3, state=TradingState.HALTED))
    assert m.value("levibot_risk_trading_state", state="halted") == 1
    assert m.value("levibot_risk_trading_state", state="active") == 0
    await h.send(cmd(SetKillSwitch, T0 + 4, on=False))
    assert m.value("levibot_risk_kill_switch") == 0


def test_exposure_is_the_gross_notional_of_the_open_positions_at_their_last_prices() -> None:
    holdings = {
        "BTCUSDT": Holding(symbol="BTCUSDT", quantity=0.5, avg_price=100.0, last_price=120.0),
        "ETHUSDT": Holding(symbol="ETHUSDT", quantity=-2.0, avg_price=10.0, last_price=9.0),
    }
    portfolio = Portfolio(1_000.0, state=PortfolioState(cash=1_000.0, holdings=holdings))
    assert portfolio.exposure == pytest.approx(0.5 * 120.0 + 2.0 * 9.0)
    assert Portfolio(1_000.0).exposure == 0.0


@pytest.mark.anyio
async def test_the_gateway_counts_requests_by_route_pattern_and_status(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        read = {"X-API-Key": g.keys["read"]}
        statuses = []
        for path, headers in (
            ("/health", {}),
            ("/orders/abc", read),
            ("/orders/def", read),
            ("/portfolio/summary", {}),
            ("/no/such/route", {}),
        ):
            async with g.session.get(g.url + path, headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [200, 404, 404, 401, 404]
        m = g.ctx.metrics

        def count(route: str, code: int) -> float:
            return m.value("gateway_requests_total", route=route, method="GET", code=str(code))

        assert count("/health", 200) == 1
        assert count("/orders/{client_order_id}", 404) == 2  # the pattern, not the raw paths
        assert count("/portfolio/summary", 401) == 1
        assert count("unmatched", 404) == 1
        assert m.value("gateway_requests_total") == 5
        assert m.value("gateway_request_seconds") == 5

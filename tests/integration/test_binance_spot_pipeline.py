"""The whole pipeline trades on the Binance venue (the stand-in) as it does on paper.

Real BTCUSDT 1h bars replay through the real actors (feed, scoring with ``ema_cross``, risk,
order) once with the paper venue and once with ``venue = "binance"`` against the stand-in over
HTTP, the user-data stream open. The stand-in fills market orders at the close of the bar
just seen (a ``SpotMarket`` actor in the same node tells it) and charges 10 bps in USDT, which
is the paper venue's ``fill = "close"`` with 10 bps fee and no slippage. The fills must then be
the same: the same orders, quantities, prices, fees, PnL and positions, in the same order.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from levibot.backtest import BacktestSpec, run_backtest, run_node
from levibot.backtest.runner import backtest_settings
from levibot.execution.binance import BinanceConfig
from levibot.messages import Bar, Fill, OrderClosed, OrderIntent, PortfolioSnapshot
from levibot.registry import register
from levibot.runtime import Actor
from levibot.testing import write_real_bars
from tests.fakes.binance_spot import BinanceSpot, rules, serving

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BARS = 1500
KEY, SECRET = "pipeline-key", "pipeline-secret"
#: Where the stand-in's market is: the last close the SpotMarket actor saw, per symbol.
MARKET: dict[str, float] = {}


class SpotMarket(Actor):
    """Tells the stand-in the market price: each bar's close, as the bar goes by."""

    name = "spot_market"
    consumes = (Bar,)

    async def handle(self, msg: Bar) -> None:
        MARKET[msg.symbol] = msg.close


register(SpotMarket.name, f"{__name__}:SpotMarket")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_bars(tmp_path_factory.mktemp("data") / "BTCUSDT-1h.csv", BARS)


def row(f: Fill) -> tuple[object, ...]:
    return (f.fill_id, f.client_order_id, f.side, f.quantity, f.price, f.position_after, f.reason,
            f.ts_event)  # fmt: skip


async def test_the_pipeline_fills_on_the_stand_in_as_on_paper(
    csv_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = BacktestSpec(data=str(csv_path), strategy="ema_cross", fill="close",
                        slippage_bps=0.0, fee_bps=10.0, sizing="all_in",
                        params={"fast": "9", "slow": "21"})  # fmt: skip
    paper_run = (await run_backtest(spec)).recorder
    paper = paper_run.of_type(Fill)
    assert len(paper) > 20

    monkeypatch.setenv("LEVIBOT_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("LEVIBOT_BINANCE_API_SECRET", SECRET)
    spot = BinanceSpot(api_key=KEY, api_secret=SECRET, fee_in_quote=True, price=MARKET)
    spot.symbols["BTCUSDT"] = rules("BTCUSDT", "BTC", "USDT", step="0.00000001",
                                    min_qty="0.00000001", min_notional="1")  # fmt: skip
    spot.balances["USDT"] = [Decimal("10000"), Decimal(0)]
    async with serving(spot) as (rest, ws):
        settings = backtest_settings(spec, csv_path)
        binance = BinanceConfig(base_url=rest, ws_url=ws, symbols=("BTCUSDT",))
        order = msgspec.structs.replace(settings.actors["order"], venue="binance",
                                        binance=binance, state_dir=str(tmp_path))  # fmt: skip
        groups = {"backtest": [*settings.groups["backtest"], "spot_market"]}
        settings = msgspec.structs.replace(
            settings, actors={**settings.actors, "order": order}, groups=groups
        )
        recorder = (await run_node(settings)).recorder
        assert spot.keys_made  # the user stream was open
    assert not spot.listen_keys  # and its key closed when the node stopped
    live = recorder.of_type(Fill)

    assert [row(f) for f in live] == [row(f) for f in paper]
    for a, b in zip(live, paper, strict=True):
        # The venue's fee is computed in decimal there, the paper's in float here.
        assert a.fee == pytest.approx(b.fee, rel=1e-12)
        assert a.realized_pnl == pytest.approx(b.realized_pnl, rel=1e-9, abs=1e-9)
    # Every order went through the venue, once, and the venue's account agrees.
    assert len(spot.trades) == len(live) and not spot.open()
    assert len(recorder.of_type(OrderIntent)) == len(live)
    assert not recorder.of_type(OrderClosed)  # nothing rejected, cancelled or expired
    last = live[-1]
    assert float(spot.balances.get("BTC", [Decimal(0)])[0]) == pytest.approx(last.position_after)
    end_live, end_paper = (
        recorder.of_type(PortfolioSnapshot)[-1],
        paper_run.of_type(PortfolioSnapshot)[-1],
    )
    assert end_live.equity == pytest.approx(end_paper.equity, rel=1e-12)
    # Float sums here, decimal there: equal to a millionth of a USDT after 55 fills.
    assert end_live.cash == pytest.approx(float(spot.balances["USDT"][0]), abs=1e-6)

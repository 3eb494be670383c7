"""Codec round trips and golden payloads: a wire-format break fails here."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from levibot.errors import DecodeError
from levibot.messages import (
    CORE_TYPES,
    ActivateModel,
    Alert,
    AlertLevel,
    Bar,
    CancelOrder,
    Codec,
    Features,
    Fill,
    Heartbeat,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    Quote,
    RiskStatus,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Side,
    Signal,
    SignalSide,
    StartStrategy,
    StopStrategy,
    SubmitOrder,
    Tick,
    TradingState,
)

GOLDEN = Path(__file__).parents[1] / "golden"
T = dict(ts_event=1_700_000_000_000_000_000, ts_init=1_700_000_000_000_001_000, ts_ingress=7)

EXAMPLES: list[Message] = [
    Tick(**T, symbol="BTCUSDT", venue="binance", price=43000.5, size=0.25, side=Side.SELL,
         trade_id=42),
    Quote(**T, symbol="BTCUSDT", venue="binance", bid=1.0, bid_size=2.0, ask=1.5, ask_size=3.0),
    Bar(**T, symbol="BTCUSDT", venue="binance", timeframe="1h", start=1, open=1.0, high=2.0,
        low=0.5, close=1.5, volume=10.0, trades=3),
    Features(**T, symbol="BTCUSDT", schema_hash="abc", values=(1.0, 2.5), price=1.5,
             timeframe="1h", spread_bps=1.2),
    Signal(**T, symbol="BTCUSDT", strategy="onnx", side=SignalSide.LONG, probability=0.6,
           confidence=0.2, price=1.5, atr=0.1, spread_bps=1.0, model_id="m1"),
    OrderIntent(**T, symbol="BTCUSDT", client_order_id="c1", strategy="onnx", side=Side.BUY,
                quantity=0.5, price=1.5, stop_loss=1.0, take_profit=2.0, max_hold_ns=10,
                reduce_only=False, reason="signal"),
    OrderDenied(**T, symbol="BTCUSDT", client_order_id="c1", strategy="onnx",
                code="KILL_SWITCH", reason="kill switch is on"),
    OrderAccepted(**T, symbol="BTCUSDT", client_order_id="c1", side=Side.BUY, quantity=0.5),
    Fill(**T, symbol="BTCUSDT", fill_id="f1", client_order_id="c1", side=Side.BUY,
         quantity=0.5, price=1.5, fee=0.01, realized_pnl=0.0, reason="signal",
         position_after=0.5),
    OrderClosed(**T, symbol="BTCUSDT", client_order_id="c1", reason="stop_loss",
                exit_price=1.0, realized_pnl=-0.25),
    PortfolioSnapshot(**T, cash=100.0, equity=101.0, realized_pnl=0.5, unrealized_pnl=0.5,
                      fees=0.1, positions=(Position(symbol="BTCUSDT", quantity=0.5,
                      avg_price=1.5, last_price=2.5, unrealized_pnl=0.5),)),
    SetKillSwitch(**T, command_id="k1", issued_by="admin", on=True),
    SetTradingState(**T, command_id="k2", state=TradingState.REDUCING),
    SetRiskPolicy(**T, command_id="k3", policy="moderate"),
    StartStrategy(**T, command_id="k4", strategy="ema_cross"),
    StopStrategy(**T, command_id="k5", strategy="ema_cross"),
    ActivateModel(**T, command_id="k6", model_id="m2", role="shadow"),
    SubmitOrder(**T, command_id="k7", symbol="BTCUSDT", side="buy", quantity=0.1, price=2.0),
    Alert(**T, alert_id="a1", level=AlertLevel.CRITICAL, source="risk", text="drawdown",
          code="MAX_DRAWDOWN"),
    Heartbeat(**T, node="n1", groups=("ingest",), ready=True),
    RiskStatus(**T, kill_switch=True, trading_state=TradingState.HALTED, policy="moderate",
               equity=9_000.0, peak_equity=10_000.0, drawdown=0.1, day_trades=3,
               day_realized_pnl=-12.5),
    CancelOrder(**T, command_id="k8", issued_by="admin", client_order_id="c1",
                symbol="BTCUSDT"),
]  # fmt: skip


def test_every_core_type_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(CORE_TYPES)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    codec = Codec(CORE_TYPES)
    assert codec.decode(codec.encode(msg)) == msg


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_golden_payload_is_unchanged(msg: Message) -> None:
    """Encoding must match the committed bytes; regenerate only for a deliberate change."""
    codec = Codec(CORE_TYPES)
    path = GOLDEN / f"{type(msg).__name__}.msgpack"
    if os.environ.get("LEVIBOT_REGEN_GOLDEN"):
        path.write_bytes(codec.encode(msg))
    golden = path.read_bytes()
    assert codec.encode(msg) == golden
    assert codec.decode(golden) == msg


def test_an_old_payload_without_a_new_trailing_field_still_decodes() -> None:
    codec = Codec(CORE_TYPES)
    raw = msgspec.msgpack.decode(codec.encode(EXAMPLES[0]))
    del raw["trade_id"]  # as if written before the field existed
    del raw["ts_ingress"]
    decoded = codec.decode(msgspec.msgpack.encode(raw))
    assert isinstance(decoded, Tick) and decoded.trade_id == 0


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"not msgpack at all", msgspec.msgpack.encode({"type": "levibot.Nope"}),
     msgspec.msgpack.encode({"type": "levibot.Tick", "price": "cheap"}),
     msgspec.msgpack.encode([1, 2])],
    ids=["empty", "reserved-byte", "text", "unknown-tag", "bad-field", "not-a-map"],
)  # fmt: skip
def test_malformed_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        Codec(CORE_TYPES).decode(payload)


def test_messages_are_immutable() -> None:
    with pytest.raises(AttributeError):
        EXAMPLES[0].price = 1.0  # type: ignore[misc]


def test_subjects_follow_the_design() -> None:
    subjects = {type(m).__name__: m.subject() for m in EXAMPLES}
    assert subjects["Tick"] == "lb.md.tick.binance.BTCUSDT"
    assert subjects["Bar"] == "lb.md.bar.1h.BTCUSDT"
    assert subjects["Features"] == "lb.feat.BTCUSDT"
    assert subjects["Signal"] == "lb.signal.onnx.BTCUSDT"
    assert subjects["OrderIntent"] == "lb.order.intent.BTCUSDT"
    assert subjects["Fill"] == "lb.order.event.BTCUSDT"
    assert subjects["PortfolioSnapshot"] == "lb.portfolio"
    assert subjects["SetKillSwitch"] == "lb.ctl.risk"
    assert subjects["StartStrategy"] == "lb.ctl.scoring"
    assert subjects["CancelOrder"] == "lb.ctl.order"
    assert subjects["Alert"] == "lb.alert.critical"
    durable = {type(m).__name__ for m in EXAMPLES if m.durable}
    assert durable == {
        "OrderIntent", "OrderDenied", "OrderAccepted", "Fill", "OrderClosed", "SetKillSwitch",
        "SetTradingState", "SetRiskPolicy", "StartStrategy", "StopStrategy", "ActivateModel",
        "SubmitOrder", "Alert", "CancelOrder",
    }  # fmt: skip

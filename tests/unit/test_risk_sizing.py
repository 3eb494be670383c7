"""Sizing modes, each checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from levibot.risk import (
    EXIT_POLICIES,
    ExitPolicy,
    SizingMode,
    SizingParams,
    floor_step,
    kelly_fraction,
    size_entry,
)

MODERATE = EXIT_POLICIES["moderate"]  # SL 1.5 ATR, TP 1.5 ATR: payoff ratio 1
AGGRESSIVE = EXIT_POLICIES["aggressive"]  # SL 1.0, TP 2.0: payoff ratio 2


def size(
    mode: SizingMode,
    *,
    price: float = 100.0,
    equity: float = 10_000.0,
    cash: float = 10_000.0,
    atr: float = 2.0,
    probability: float = 0.6,
    policy: ExitPolicy = MODERATE,
    max_order_notional: float = 0.0,
    **params: float,
) -> float:
    return size_entry(
        SizingParams(mode=mode, **params),
        price=price,
        equity=equity,
        cash=cash,
        atr=atr,
        probability=probability,
        policy=policy,
        max_order_notional=max_order_notional,
    ).quantity


def test_fixed_notional_buys_notional_over_price() -> None:
    assert size("fixed_notional", notional=1_000.0, price=100.0) == 10.0
    assert size("fixed_notional", notional=1_000.0, price=30_000.0) == 0.03333333


def test_all_in_spends_cash_over_price_times_one_plus_fee_in_steps_of_1e8() -> None:
    # 10_000 / (30_000 * 1.001) = 0.333000333000... -> floored to 8 decimals
    assert size("all_in", price=30_000.0, fee_bps=10.0) == 0.33300033
    # a fraction of it: 0.5 * 10_000 / (100 * 1.001) = 49.95004995... -> 49.95004995
    assert size("all_in", equity_fraction=0.5, price=100.0, fee_bps=10.0) == 49.95004995


def test_atr_risk_loses_risk_fraction_of_equity_at_the_stop() -> None:
    # equity 10_000 * 1 % = 100 at risk; stop 1.5 * ATR 50 = 75 away -> 1.3333 units
    qty = size("atr_risk", risk_fraction=0.01, atr=50.0, price=1_000.0)
    assert qty == 1.33333333
    assert qty * 1.5 * 50.0 == pytest.approx(100.0, abs=1e-5)


def test_atr_risk_without_atr_sizes_nothing() -> None:
    assert size("atr_risk", atr=0.0) == 0.0


def test_kelly_is_fractional_and_scaled_to_the_volatility_target() -> None:
    # p=0.6, payoff 1: f* = 0.6 - 0.4 = 0.2; half Kelly 0.1; vol 2/100 = 0.02, target 0.01
    # -> scale 0.5; notional 10_000 * 0.1 * 0.5 = 500 -> 5 units at 100
    assert kelly_fraction(0.6, MODERATE) == pytest.approx(0.2)
    assert size("kelly", probability=0.6, kelly_fraction=0.5, vol_target=0.01) == 5.0
    # payoff 2 (aggressive): f* = 0.6 - 0.4 / 2 = 0.4; vol scale capped at max_leverage 1
    assert kelly_fraction(0.6, AGGRESSIVE) == pytest.approx(0.4)
    assert size("kelly", probability=0.6, kelly_fraction=0.5, policy=AGGRESSIVE) == 20.0


def test_kelly_without_edge_sizes_nothing() -> None:
    assert size("kelly", probability=0.5) == 0.0
    assert size("kelly", probability=0.3) == 0.0


def test_every_mode_is_clamped_to_max_notional_and_cash() -> None:
    assert size("fixed_notional", notional=5_000.0, max_order_notional=1_500.0) == 15.0
    # cash 1_001 pays 1_000 of notional plus a 10 bps fee
    assert size("fixed_notional", notional=5_000.0, cash=1_001.0, fee_bps=10.0) == 10.0


def test_floor_step_never_rounds_up() -> None:
    assert floor_step(0.123456789, 1e-8) == 0.12345678
    assert floor_step(0.3, 1e-8) == 0.3  # 0.3 / 1e-8 is 29999999.999999996 in floats
    assert floor_step(math.nan, 1e-8) == 0.0
    assert floor_step(-1.0, 1e-8) == 0.0

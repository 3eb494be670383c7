"""The scoring actor: micro-batching, hot swap, refusals, shadow, canary, expiry and drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import talib

from levibot.actors.scoring import ScoringActor, ScoringConfig
from levibot.clock import ReplayClock
from levibot.features import SCHEMA
from levibot.messages import (
    ActivateModel,
    Alert,
    Bar,
    Features,
    Signal,
    SignalSide,
    StartStrategy,
    StopStrategy,
)
from levibot.ml.monitor import in_canary
from levibot.ml.registry import ModelRegistry
from levibot.ml.scorer import Scorer
from levibot.ml.testing import make_model
from levibot.strategies import EmaCrossParams
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio
K = len(SCHEMA.names)
USED = ("close_ema_12_ratio", "rsi_14", "bb_pctb", "ret_1")
COLS = tuple(SCHEMA.index(n) for n in USED)
CREATED = 1_700_000_000_000_000_000
S = 1_000_000_000
T0 = CREATED


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scoring")
    reg = ModelRegistry(root / "models", schema_hash=SCHEMA.hash)
    for mid, sign, schema_hash in (
        ("A", 1.0, SCHEMA.hash),
        ("B", -1.0, SCHEMA.hash),
        ("OLD", 1.0, "0000000000000000"),
    ):
        make_model(
            root / mid,
            model_id=mid,
            schema_hash=schema_hash,
            schema_size=K,
            columns=COLS,
            names=USED,
            sign=sign,
            created_at_ns=CREATED,
        )
        reg.register(root / mid)
    reg.activate("A")
    return root / "models"


async def _actor(
    registry_dir: Path, clock_ns: int = CREATED, **cfg: Any
) -> tuple[ScoringActor, RecordingContext]:
    ctx = RecordingContext("scoring", clock=ReplayClock(clock_ns))
    actor = ScoringActor(ctx, ScoringConfig(registry_dir=str(registry_dir), **cfg))
    await actor.on_start()
    return actor, ctx


def _features(
    n: int, *, seed: int = 0, symbols: int = 7, scale: float = 1.0, schema_hash: str = SCHEMA.hash
) -> list[Features]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, K)) * scale
    return [
        Features(
            ts_event=CREATED + i,
            ts_init=CREATED + i,
            ts_ingress=1000 + i,
            symbol=f"S{i % symbols}",
            schema_hash=schema_hash,
            values=tuple(float(v) for v in rows[i]),
            price=100.0 + i,
            spread_bps=1.5,
        )
        for i in range(n)
    ]


def _rows(msgs: list[Features]) -> np.ndarray:
    return np.asarray([m.values for m in msgs], np.float32)


def _onnx(ctx: RecordingContext) -> list[Signal]:
    return [s for s in ctx.of_type(Signal) if s.strategy == "onnx"]


async def test_every_features_message_of_a_batch_is_scored_in_one_run(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir)
    msgs = _features(200, symbols=50)
    await actor.handle_batch(msgs)
    signals = _onnx(ctx)
    assert [s.ts_ingress for s in signals] == [m.ts_ingress for m in msgs]
    assert ctx.metrics.value("scoring_runs_total") == 1
    want = Scorer.from_registry(ModelRegistry(registry_dir, schema_hash=SCHEMA.hash)).predict(
        _rows(msgs)
    )
    np.testing.assert_allclose([s.probability for s in signals], want, atol=1e-6)
    small, ctx2 = await _actor(registry_dir, max_batch=64)
    await small.handle_batch(msgs)
    assert ctx2.metrics.value("scoring_runs_total") == 4


async def test_signals_carry_side_confidence_price_atr_and_latency_stamps(
    registry_dir: Path,
) -> None:
    actor, ctx = await _actor(registry_dir, allow_short=True)
    msgs = _features(300)
    await actor.handle_batch(msgs)
    atr = SCHEMA.index("atr_14")
    sides = set()
    for sig, msg in zip(_onnx(ctx), msgs, strict=True):
        assert sig.symbol == msg.symbol and sig.model_id == "A"
        assert sig.confidence == pytest.approx(abs(sig.probability - 0.5) * 2)
        assert sig.price == msg.price and sig.spread_bps == 1.5 and sig.atr == msg.values[atr]
        assert sig.ts_event == msg.ts_event and sig.ts_ingress == msg.ts_ingress
        want = (
            SignalSide.LONG
            if sig.probability >= 0.55
            else SignalSide.SHORT
            if sig.probability <= 0.45
            else SignalSide.FLAT
        )
        assert sig.side is want
        sides.add(sig.side)
    assert sides == {SignalSide.LONG, SignalSide.SHORT, SignalSide.FLAT}


@pytest.mark.parametrize("chunk", [1, 7, 1000])
async def test_hot_swap_mid_stream_drops_nothing_and_switches_models_in_place(
    registry_dir: Path, chunk: int
) -> None:
    actor, ctx = await _actor(registry_dir)
    before, after = _features(60, seed=1), _features(60, seed=2)
    stream: list[Any] = [
        *before,
        ActivateModel(ts_event=1, ts_init=1, command_id="c1", model_id="B"),
        *after,
    ]
    for lo in range(0, len(stream), chunk):
        await actor.handle_batch(stream[lo : lo + chunk])
    signals = _onnx(ctx)
    assert len(signals) == len(before) + len(after)
    assert [s.model_id for s in signals] == ["A"] * 60 + ["B"] * 60
    reg = ModelRegistry(registry_dir, schema_hash=SCHEMA.hash)
    np.testing.assert_allclose(
        [s.probability for s in signals[:60]],
        Scorer.from_registry(reg, "A").predict(_rows(before)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [s.probability for s in signals[60:]],
        Scorer.from_registry(reg, "B").predict(_rows(after)),
        atol=1e-6,
    )
    assert actor.health()["model_id"] == "B"
    assert [a.code for a in ctx.of_type(Alert)] == ["model.activated"]


async def test_a_model_of_another_feature_schema_is_refused_and_the_old_one_kept(
    registry_dir: Path,
) -> None:
    actor, ctx = await _actor(registry_dir)
    await actor.handle_batch(
        [ActivateModel(ts_event=1, ts_init=1, command_id="c", model_id="OLD"), *_features(5)]
    )
    alerts = ctx.of_type(Alert)
    assert [a.code for a in alerts] == ["model.schema_mismatch"]
    assert "0000000000000000" in alerts[0].text and SCHEMA.hash in alerts[0].text
    assert {s.model_id for s in _onnx(ctx)} == {"A"} and len(_onnx(ctx)) == 5
    await actor.handle(ActivateModel(ts_event=1, ts_init=1, command_id="d", model_id="nope"))
    assert ctx.of_type(Alert)[-1].code == "model.load_failed"
    assert actor.health()["model_id"] == "A"


async def test_commands_apply_in_their_place_within_a_batch(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir)
    f = _features(3)
    stop = StopStrategy(ts_event=1, ts_init=1, command_id="s", strategy="onnx")
    start = StartStrategy(ts_event=1, ts_init=1, command_id="t", strategy="onnx")
    await actor.handle_batch([f[0], stop, f[1], start, f[2]])
    assert [s.ts_ingress for s in _onnx(ctx)] == [f[0].ts_ingress, f[2].ts_ingress]
    await actor.handle(StartStrategy(ts_event=1, ts_init=1, command_id="u", strategy="magic"))
    assert ctx.of_type(Alert)[-1].code == "strategy.unknown"


def _bar(i: int, close: float, symbol: str = "S0", **kw: Any) -> Bar:
    ts = T0 + i * 60 * S
    return Bar(
        ts_event=ts, ts_init=ts, ts_ingress=ts - 7, symbol=symbol, venue="test",
        timeframe=kw.get("timeframe", "1m"), start=ts - 60 * S, open=close,
        high=kw.get("high", close), low=close, close=close, volume=1.0, trades=1,
    )  # fmt: skip


async def test_rule_strategies_read_bars_with_their_own_spans_beside_the_model(
    registry_dir: Path,
) -> None:
    actor, ctx = await _actor(
        registry_dir, strategies=("ema_cross", "onnx"), ema_cross=EmaCrossParams(fast=2, slow=3)
    )
    closes = [10.0, 10.0, 10.0, 9.0, 8.0, 12.0, 14.0, 9.0, 7.0]
    bars = [_bar(i, c) for i, c in enumerate(closes)]
    await actor.handle_batch(bars)
    sig = ctx.of_type(Signal)
    diff = talib.EMA(np.array(closes), 2) - talib.EMA(np.array(closes), 3)
    ups = [i for i in range(1, len(diff)) if diff[i - 1] < 0 < diff[i]]
    downs = [i for i in range(1, len(diff)) if diff[i - 1] > 0 > diff[i]]
    assert ups and downs
    want = sorted([(i, SignalSide.LONG) for i in ups] + [(i, SignalSide.FLAT) for i in downs])
    assert [(s.ts_ingress, s.side) for s in sig] == [(bars[i].ts_ingress, s) for i, s in want]
    assert all(s.strategy == "ema_cross" and s.model_id == "" for s in sig)
    assert sig[0].probability == 0.8 and sig[0].price == closes[want[0][0]]


async def test_rules_drop_malformed_late_and_other_timeframe_bars(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir, strategies=("ema_cross",))
    await actor.handle_batch(
        [
            _bar(2, 10.0),
            _bar(1, 10.0),  # late
            _bar(3, 10.0, timeframe="1h"),  # not the symbol's timeframe
            _bar(4, float("nan")),
            _bar(5, 10.0, high=5.0),  # high below the close
        ]
    )
    for reason in ("out_of_order", "timeframe", "malformed"):
        assert ctx.metrics.value("scoring_bars_dropped_total", reason=reason) >= 1


async def test_start_strategy_with_params_restarts_the_rule_and_bad_params_alert(
    registry_dir: Path,
) -> None:
    actor, ctx = await _actor(registry_dir, strategies=())
    await actor.handle(
        StartStrategy(ts_event=T0, ts_init=T0, command_id="c1", issued_by="t",
                      strategy="ema_cross", params={"fast": 5.0, "slow": 40.0})
    )  # fmt: skip
    rule = actor.rules.rules["ema_cross"]
    assert "ema_cross" in actor.running and rule.params == EmaCrossParams(fast=5, slow=40)
    await actor.handle(
        StartStrategy(ts_event=T0, ts_init=T0, command_id="c2", issued_by="t",
                      strategy="rsi_macd", params={"fast": 40.0, "slow": 5.0})
    )  # fmt: skip
    (alert,) = ctx.of_type(Alert)
    assert alert.code == "strategy.bad_params" and "$.rsi_macd" in alert.text
    assert "rsi_macd" not in actor.running


async def test_the_shadow_model_is_compared_but_never_emitted(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir, shadow_model_id="B")
    await actor.handle_batch(_features(200))
    assert {s.model_id for s in ctx.of_type(Signal)} == {"A"}
    agreement = ctx.metrics.value("scoring_shadow_agreement")
    drift = ctx.metrics.value("scoring_shadow_drift")
    assert 0.0 <= agreement < 0.7 and drift > 0.1  # B is trained on the opposite label
    assert actor.health()["shadow"] == "B"


async def test_a_canary_fraction_of_symbols_is_routed_to_the_candidate(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir, canary_model_id="B", canary_fraction=0.5)
    await actor.handle_batch(_features(400, symbols=40))
    by_symbol: dict[str, set[str]] = {}
    for s in _onnx(ctx):
        by_symbol.setdefault(s.symbol, set()).add(s.model_id)
    assert all(len(v) == 1 for v in by_symbol.values())  # stable per symbol
    canary = {sym for sym, v in by_symbol.items() if v == {"B"}}
    assert canary == {sym for sym in by_symbol if in_canary(sym, 0.5)}
    assert 5 < len(canary) < 35


async def test_an_expired_model_raises_one_alert(registry_dir: Path) -> None:
    day = 86_400 * 10**9
    actor, ctx = await _actor(registry_dir, clock_ns=CREATED + 3 * day, max_model_age_s=2 * 86_400)
    await actor.handle_batch(_features(10))
    await actor.handle_batch(_features(10))
    assert [a.code for a in ctx.of_type(Alert)] == ["model.expired"]
    fresh, ctx2 = await _actor(registry_dir, clock_ns=CREATED + day, max_model_age_s=2 * 86_400)
    await fresh.handle_batch(_features(10))
    assert ctx2.of_type(Alert) == []


async def test_inputs_outside_the_training_range_raise_a_drift_alert(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir, drift_window=50, drift_max_fraction=0.1)
    await actor.handle_batch(_features(100))
    assert ctx.of_type(Alert) == []  # inside the range it was trained on
    await actor.handle_batch(_features(50, seed=3, scale=50.0))
    alerts = ctx.of_type(Alert)
    assert [a.code for a in alerts] == ["model.input_drift"]
    assert any(name in alerts[0].text for name in USED)
    await actor.handle_batch(_features(50, seed=4, scale=50.0))
    assert len(ctx.of_type(Alert)) == 1  # once, until it recovers


async def test_garbage_and_warm_up_vectors_are_refused_without_a_crash(registry_dir: Path) -> None:
    actor, ctx = await _actor(registry_dir)
    good = _features(2)
    wrong_hash = _features(1, schema_hash="ffffffffffffffff")
    short = [
        Features(
            ts_event=1, ts_init=1, symbol="X", schema_hash=SCHEMA.hash, values=(1.0, 2.0), price=1.0
        )
    ]
    warm = [
        Features(
            ts_event=1,
            ts_init=1,
            symbol="W",
            schema_hash=SCHEMA.hash,
            values=(float("nan"),) * K,
            price=1.0,
        )
    ]
    await actor.handle_batch([*wrong_hash, good[0], *short, *warm, good[1]])
    assert [s.ts_ingress for s in _onnx(ctx)] == [good[0].ts_ingress, good[1].ts_ingress]
    assert ctx.metrics.value("scoring_rejected_total", reason="schema") == 1
    assert ctx.metrics.value("scoring_rejected_total", reason="size") == 1
    assert ctx.metrics.value("scoring_skipped_total") == 1


async def test_without_a_model_the_actor_starts_and_rules_still_run(tmp_path: Path) -> None:
    actor, ctx = await _actor(tmp_path / "empty", strategies=("onnx", "rsi_macd"))
    await actor.handle_batch(_features(20))
    assert _onnx(ctx) == []
    assert actor.health()["model_id"] is None
    assert ctx.metrics.value("scoring_model_loaded") == 0.0


async def test_hot_swap_through_the_real_mailbox_and_runner_loses_nothing(
    registry_dir: Path,
) -> None:
    import anyio

    from levibot.bus import LocalBus, Mailbox
    from levibot.runtime._runner import ActorRunner

    ctx = RecordingContext("scoring", clock=ReplayClock(CREATED))
    actor = ScoringActor(ctx, ScoringConfig(registry_dir=str(registry_dir)))
    bus = LocalBus()
    mailbox = Mailbox("scoring", ScoringActor.mailbox_size, conflate=True)
    bus.subscribe(mailbox, ScoringActor.consumes)
    fatal: list[BaseException] = []
    runner = ActorRunner(
        actor,
        mailbox,
        clock=ctx.clock,
        metrics=ctx.metrics,
        log=ctx.log,
        on_fatal=lambda _name, exc: fatal.append(exc),
    )
    await runner.start()
    before, after = _features(300, seed=5, symbols=30), _features(300, seed=6, symbols=30)
    swap = ActivateModel(ts_event=CREATED, ts_init=CREATED, command_id="swap", model_id="B")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run_inbox)
        for i, msg in enumerate([*before, swap, *after]):
            await bus.publish(msg)
            if i % 25 == 0:
                await anyio.lowlevel.checkpoint()  # let the runner drain a micro-batch
        mailbox.close()
    await runner.stop()
    assert not fatal and mailbox.dropped == 0
    signals = _onnx(ctx)
    assert [s.ts_ingress for s in signals] == [m.ts_ingress for m in [*before, *after]]
    assert [s.model_id for s in signals] == ["A"] * 300 + ["B"] * 300
    assert ctx.metrics.value("scoring_runs_total") <= 600 / 20  # batched: ~25 rows a run

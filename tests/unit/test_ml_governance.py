"""Model governance: the promotion gate, live metrics on realised outcomes, canary rollback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from levibot.actors.scoring import ScoringActor, ScoringConfig
from levibot.cli import main
from levibot.clock import ReplayClock
from levibot.features import SCHEMA
from levibot.messages import Alert, Features, Signal
from levibot.ml.governance import (
    CanaryPolicy,
    LiveMetrics,
    OutcomeTracker,
    PromotionRefused,
    canary_verdict,
    check_promotion,
    promotion,
)
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model
from levibot.ml.train import TrainConfig, train_model
from levibot.testing import RecordingContext
from tests.unit.test_ml_dataset import random_bars

K = len(SCHEMA.names)
USED = ("close_ema_12_ratio", "rsi_14", "bb_pctb", "ret_1")
COLS = tuple(SCHEMA.index(n) for n in USED)
CREATED = 1_700_000_000_000_000_000
SMALL = TrainConfig(n_estimators=10, num_leaves=7, folds=2, min_data_in_leaf=20, num_threads=1)


def m(net: float) -> dict[str, Any]:
    return {"net_return": net}


def test_the_gate_passes_a_model_that_beats_every_baseline_and_says_why() -> None:
    ok = promotion({"model": m(0.3)}, {"always_flat": m(0.0), "always_long": m(0.2)})
    assert ok.passed and "beats always_flat +0.0000, always_long +0.2000" in ok.why
    no = promotion(
        {"model": m(0.1)},
        {"always_flat": m(0.0), "always_long": m(0.2), "shuffled": m(-0.1)},
    )
    assert not no.passed and "does not beat always_long +0.2000" in no.why
    assert not promotion({}, {"always_flat": m(0.0)}).passed
    assert not promotion({"model": m(math.nan)}, {"always_flat": m(0.0)}).passed


def test_training_activates_only_a_promoted_model_unless_forced(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    bars = random_bars(3000, seed=4)
    with pytest.raises(PromotionRefused, match="not promoted"):
        train_model(bars=bars, config=SMALL, registry=registry, activate=True, progress=False)
    (card,) = registry.list()  # registered, not active
    assert registry.active() is None
    assert card.promotion["passed"] is False and "does not beat" in card.promotion["why"]
    forced = train_model(
        bars=bars, config=SMALL, registry=registry, activate=True, force=True, progress=False
    )
    assert registry.active() == forced
    with pytest.raises(PromotionRefused):
        check_promotion(card)
    check_promotion(card, force=True)


def test_models_activate_refuses_an_unpromoted_model_and_force_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    card = train_model(bars=random_bars(3000, seed=4), config=SMALL, registry=registry,
                       progress=False)  # fmt: skip
    assert card.promotion["passed"] is False  # a random walk: nothing to beat the baselines
    reg = str(tmp_path / "models")
    assert main(["models", "--registry", reg, "activate", card.model_id]) == 2
    assert "not promoted" in capsys.readouterr().err
    assert registry.active() is None
    assert main(["models", "--registry", reg, "activate", card.model_id, "--force"]) == 0
    assert registry.active() == card


def test_labels_mature_horizon_rows_later_with_the_training_definition() -> None:
    t = OutcomeTracker(horizon=2, fee_bps=10.0)  # the label needs log return > 0.002
    assert t.observe("X", 100.0, {"a": 0.9}) == []
    assert t.observe("X", 100.0, {"a": 0.2}) == []
    assert t.observe("Y", 50.0, {"a": 0.5}) == []  # its own symbol, its own queue
    assert t.observe("X", 101.0, {"a": 0.7}) == ["a"]  # row 0 matures: up 1 % → label 1
    assert t.observe("X", 100.1, {"a": 0.7}) == ["a"]  # row 1: up 0.1 % < cost → label 0
    live = t.metrics["a"]
    assert list(live.y) == [1, 0] and list(live.p) == [0.9, 0.2]
    s = live.summary()
    assert s["auc"] == 1.0 and s["hit_rate"] == 1.0
    assert s["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    t.forget("a")
    assert "a" not in t.metrics


def test_the_canary_verdict_waits_for_rows_then_compares_on_the_same_rows() -> None:
    good, bad = LiveMetrics(), LiveMetrics()
    rng = np.random.default_rng(0)
    for _ in range(600):
        y = int(rng.random() < 0.5)
        good.add(0.8 if y else 0.2, y)
        bad.add(0.2 if y else 0.8, y)
    policy = CanaryPolicy(min_rows=500)
    assert canary_verdict(good, bad, policy) is None
    assert "log loss" in (canary_verdict(bad, good, policy) or "")
    assert canary_verdict(bad, good, CanaryPolicy(min_rows=601)) is None


# ---- the scoring actor ------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gov")
    reg = ModelRegistry(root / "models", schema_hash=SCHEMA.hash)
    for mid, sign in (("A", 1.0), ("B", -1.0)):
        make_model(root / mid, model_id=mid, schema_hash=SCHEMA.hash, schema_size=K,
                   columns=COLS, names=USED, sign=sign, created_at_ns=CREATED)  # fmt: skip
        reg.register(root / mid)
    reg.activate("A")
    return root / "models"


def world(n: int, symbols: int = 8, seed: int = 1) -> list[Features]:
    """Feature rows whose realised outcome follows model A's truth (x0 + 0.5 x1 > 0).

    Each symbol's close 4 bars later (the models' horizon) is 1 % above or below: the label
    is exactly the sign A was trained on; B learned the opposite."""
    rng = np.random.default_rng(seed)
    out: list[Features] = []
    closes: dict[str, list[float]] = {}
    for i in range(n):
        sym = f"S{i % symbols}"
        values = rng.normal(size=K)
        truth = values[COLS[0]] + 0.5 * values[COLS[1]] > 0
        path = closes.setdefault(sym, [100.0] * 4)
        price = path[-4]
        path.append(price * (1.01 if truth else 0.99))
        out.append(
            Features(
                ts_event=CREATED + i,
                ts_init=CREATED + i,
                ts_ingress=i,
                symbol=sym,
                schema_hash=SCHEMA.hash,
                values=tuple(float(v) for v in values),
                price=path[-5],
            )
        )
    return out


async def _actor(registry_dir: Path, **cfg: Any) -> tuple[ScoringActor, RecordingContext]:
    ctx = RecordingContext("scoring", clock=ReplayClock(CREATED))
    actor = ScoringActor(ctx, ScoringConfig(registry_dir=str(registry_dir), **cfg))
    await actor.on_start()
    return actor, ctx


@pytest.mark.anyio
async def test_a_worse_canary_is_rolled_back_and_the_active_model_serves_its_symbols(
    registry_dir: Path,
) -> None:
    actor, ctx = await _actor(
        registry_dir, canary_model_id="B", canary_fraction=0.5, canary_min_rows=150
    )
    assert actor.models.canary is not None
    for start in range(0, 4000, 200):
        await actor.handle_batch(world(4000)[start : start + 200])
    (alert,) = [a for a in ctx.of_type(Alert) if a.code == "model.canary_rolled_back"]
    assert "canary model B rolled back: live log loss" in alert.text
    assert actor.models.canary is None
    assert ctx.metrics.value("scoring_live_auc", role="active") > 0.8
    assert "scoring_provider" not in str(ctx.metrics.value("scoring_provider", role="canary"))
    before = len(ctx.of_type(Signal))
    await actor.handle_batch(world(400, seed=2))
    assert {s.model_id for s in ctx.of_type(Signal)[before:]} == {"A"}


@pytest.mark.anyio
async def test_a_canary_as_good_as_the_active_model_stays(registry_dir: Path) -> None:
    actor, ctx = await _actor(
        registry_dir, canary_model_id="A", canary_fraction=0.5, canary_min_rows=150
    )
    for start in range(0, 2000, 200):
        await actor.handle_batch(world(2000)[start : start + 200])
    assert actor.models.canary is not None
    assert not [a for a in ctx.of_type(Alert) if a.code == "model.canary_rolled_back"]


@pytest.mark.anyio
async def test_a_canary_whose_drift_alert_fires_is_rolled_back(registry_dir: Path) -> None:
    actor, ctx = await _actor(
        registry_dir, canary_model_id="A", canary_fraction=0.5, drift_window=20
    )
    far = [
        Features(
            ts_event=CREATED + i,
            ts_init=CREATED + i,
            ts_ingress=i,
            symbol=f"S{i % 8}",
            schema_hash=SCHEMA.hash,
            values=(1e6,) * K,
            price=100.0,
        )
        for i in range(200)
    ]
    await actor.handle_batch(far)
    (alert,) = [a for a in ctx.of_type(Alert) if a.code == "model.canary_rolled_back"]
    assert "model.input_drift" in alert.text and actor.models.canary is None

"""``Actor.warm`` under ``[node] idle = "spin"``: called while the loop is idle, and it never
changes what the actors produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest

from levibot.actors.scoring import ScoringActor, ScoringConfig
from levibot.backtest.runner import BacktestSpec, backtest_settings
from levibot.clock import ReplayClock
from levibot.features import SCHEMA
from levibot.messages import Alert, Features, Fill, OrderDenied, OrderIntent, Signal
from levibot.ml.registry import ModelRegistry
from levibot.ml.serving import ModelSet
from levibot.ml.testing import make_model
from levibot.registry import register
from levibot.runtime import node as node_mod
from levibot.runtime.node import EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testing import RecordingContext, eventually, write_real_bars
from tests.pipeline import Square

pytestmark = pytest.mark.anyio
K = len(SCHEMA.names)
USED = ("close_ema_12_ratio", "rsi_14", "bb_pctb", "ret_1")
COLS = tuple(SCHEMA.index(n) for n in USED)
CREATED = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("warm")
    reg = ModelRegistry(root / "models", schema_hash=SCHEMA.hash)
    for mid, sign in (("A", 1.0), ("B", -1.0)):
        make_model(
            root / mid, model_id=mid, schema_hash=SCHEMA.hash, schema_size=K, columns=COLS,
            names=USED, sign=sign, created_at_ns=CREATED,
        )  # fmt: skip
        reg.register(root / mid)
    reg.activate("A")
    return root / "models"


def _features(n: int) -> list[Features]:
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(n, K)) * 2.0  # wide: some rows drift out of the training range
    rows[:5, COLS[0]] = np.nan  # warm-up rows, not scored
    return [
        Features(
            ts_event=CREATED + i,
            ts_init=CREATED + i,
            ts_ingress=0,
            symbol=f"S{i % 3}",
            schema_hash=SCHEMA.hash,
            values=tuple(rows[i].tolist()),
            price=100.0 + i,
            spread_bps=1.5,
        )
        for i in range(n)
    ]


def _state(actor: ScoringActor, ctx: RecordingContext) -> tuple[Any, ...]:
    models = actor.models
    assert models.active is not None and models.shadow is not None
    stats = models.shadow_stats
    return (
        [msgspec.msgpack.encode(m) for m in ctx.published],
        ctx.metrics.render(),
        models.active.drift.fraction,
        models.shadow.drift.fraction,
        (stats.rows, stats.agree, stats.abs_diff),
    )


async def test_warming_between_messages_changes_nothing_the_scoring_actor_produces(
    registry_dir: Path,
) -> None:
    """Warm (several times) before and after every message, against no warming at all: the
    same signals, alerts (the drift alert fires), metrics, drift windows and shadow stats."""
    states = []
    warmed = 0
    for warm in (False, True):
        ctx = RecordingContext("scoring", clock=ReplayClock(CREATED))
        cfg = ScoringConfig(
            registry_dir=str(registry_dir), shadow_model_id="B", drift_window=20,
            drift_max_fraction=0.05, drift_tolerance=0.0,
        )  # fmt: skip
        actor = ScoringActor(ctx, cfg)
        await actor.on_start()
        for msg in _features(60):
            if warm:
                actor.warm()
                actor.warm()
            await actor.handle(msg)
            if warm:
                before = actor.models._last
                actor.warm()
                warmed += before is not None
        assert ctx.of_type(Signal) and any(
            a.code == "model.input_drift" for a in ctx.of_type(Alert)
        )
        states.append(_state(actor, ctx))
        await actor.on_stop()
    assert warmed > 0
    assert states[0] == states[1]


def test_model_set_warm_runs_only_the_active_model_it_last_scored() -> None:
    calls: list[str] = []

    class FakeScorer:
        def predict_selected(self, x: np.ndarray) -> np.ndarray:
            calls.append("predict")
            return np.zeros(len(x))

    class FakeDrift:
        def out_of_range(self, x: np.ndarray) -> np.ndarray:
            calls.append("drift")
            return np.zeros(x.shape, bool)

    class FakeServed:
        scorer = FakeScorer()
        drift = FakeDrift()

    ms = ModelSet.__new__(ModelSet)
    ms.active, ms._last = None, None
    ms.warm()  # nothing scored yet
    served: Any = FakeServed()
    ms._last = (served, np.zeros((1, 2)))
    ms.warm()  # no active model: the last one is gone
    ms.active = served
    ms.warm()
    assert calls == ["predict", "drift"]


async def test_warming_between_bars_changes_nothing_the_feature_actor_produces() -> None:
    from levibot.actors.feature import FeatureActor, FeatureConfig
    from tests.unit.test_feature_actor import bar, walk

    rows = walk()
    runs = []
    for warm in (False, True):
        ctx = RecordingContext("feature", clock=ReplayClock(0))
        actor = FeatureActor(ctx, FeatureConfig())
        await actor.on_start()
        for i, row in enumerate(rows):
            if warm:
                actor.warm()
            await actor.handle(bar(i, row))
            if warm:
                actor.warm()
        published = ctx.of_type(Features)
        assert len(published) == len(rows) - SCHEMA.warmup + 1
        runs.append(([msgspec.msgpack.encode(m) for m in published], ctx.metrics.render()))
    assert runs[0] == runs[1]


def test_a_feature_state_copy_is_independent() -> None:
    from levibot.features import FeatureState
    from tests.unit.test_feature_actor import walk

    rows = walk()
    state, twin = FeatureState(), FeatureState()
    for row in rows[:220]:
        state.update(*row)
        twin.update(*row)
    copy = state.copy()
    ahead = [copy.update(*row) for row in rows[220:]]  # the original must not move
    assert state.bars == 220 and copy.bars == len(rows)
    assert [state.update(*row) for row in rows[220:]] == ahead
    assert [twin.update(*row) for row in rows[220:]] == ahead


# -- the node -----------------------------------------------------------------------------

WARMS: list[tuple[bool, int]] = []  # (node idle, warm calls so far) at each warm call
NODES: list[Node] = []


class WarmSquare(Square):
    """``square`` with a warm hook that records whether the node was idle when called."""

    name = "warm_square"

    def warm(self) -> None:
        WARMS.append((NODES[-1]._idle(), len(WARMS)))


class BrokenWarm(Square):
    name = "broken_warm"

    def warm(self) -> None:
        raise RuntimeError("broken warm hook")


register(WarmSquare.name, f"{__name__}:WarmSquare")
register(BrokenWarm.name, f"{__name__}:BrokenWarm")


async def _run_chain(worker: str, idle: str) -> Node:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "groups": {"all": ("counter", worker, "sink")},
            "node": {"groups": ["all"], "http_port": -1, "idle": idle},
            "counter": {"count": 200, "pace_every": 20},
        },
    )
    node = Node(settings)
    NODES.append(node)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: len(getattr(node.actors["sink"], "seen", ())) == 200)
        await anyio.sleep(0.05)  # idle: warming time
        node.stop()
    return node


def _seen(node: Node) -> list[int]:
    sink: Any = node.actors["sink"]
    return [m.value for m in sink.seen]


async def test_spin_warms_hooked_actors_only_while_idle_and_sleep_never_does() -> None:
    WARMS.clear()
    node = await _run_chain("warm_square", "sleep")
    assert node.exit_code == EXIT_OK and not WARMS
    node = await _run_chain("warm_square", "spin")
    assert node.exit_code == EXIT_OK
    assert _seen(node) == list(range(200))
    assert len(WARMS) > 10, len(WARMS)  # every WARM_EVERY_S of the 50 ms idle spell
    assert all(idle for idle, _ in WARMS)


async def test_a_warm_hook_that_raises_is_dropped_and_the_node_goes_on() -> None:
    node = await _run_chain("broken_warm", "spin")
    assert node.exit_code == EXIT_OK
    assert _seen(node) == list(range(200))


# -- the real pipeline ---------------------------------------------------------------------

TRADING = (Signal, OrderIntent, OrderDenied, Fill)


async def _pipeline(registry_dir: Path, csv: Path, idle: str) -> tuple[Any, int]:
    """Run feed → feature → scoring → risk → order on real bars, one event at a time (the
    replay clock makes the feed settle after each bar) but with ``[node] replay = false`` so
    that ``idle`` applies; return the recorder and the scoring actor's warm calls."""
    spec = BacktestSpec(
        data=str(csv), strategy="onnx", limit=400,
        params={"registry_dir": str(registry_dir), "model_id": "A", "long_threshold": "0.5",
                "short_threshold": "0.5"},
    )  # fmt: skip
    base = backtest_settings(spec, csv)
    settings = msgspec.structs.replace(
        base, node=msgspec.structs.replace(base.node, replay=False, idle=idle)
    )
    node = Node(settings, clock=ReplayClock())
    calls = [0]
    scoring = node.actors["scoring"]
    warm = scoring.warm

    def counted() -> None:
        calls[0] += 1
        warm()

    scoring.warm = counted  # type: ignore[method-assign]
    assert await node.run(handle_signals=False) == EXIT_OK
    return node.actors["recorder"], calls[0]


async def test_a_pipeline_with_spin_and_warming_trades_exactly_as_with_sleep(
    registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_mod, "WARM_EVERY_S", 0.0)  # warm at every idle pass
    csv = write_real_bars(tmp_path / "BTCUSDT-1h.csv", 400)
    slept, none = await _pipeline(registry_dir, csv, "sleep")
    spun, warmed = await _pipeline(registry_dir, csv, "spin")
    assert none == 0 and warmed > 100, warmed
    assert len(slept.of_type(Signal)) > 100 and slept.of_type(Fill), "a run that trades"
    assert spun.encoded(*TRADING) == slept.encoded(*TRADING)

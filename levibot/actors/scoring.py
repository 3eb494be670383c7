"""The scoring actor: Features in, Signals out, from the ONNX model and rule strategies.

Micro-batching: the runtime hands over everything pending (up to ``max_batch`` messages) and
every Features message of that batch, across symbols, is scored in one ONNX Runtime ``run``
(chunks of ``ScoringConfig.max_batch`` rows). There is no artificial wait: when idle a batch is
one message, so latency is one small run. Commands are applied in their place in the batch:
Features before an ``ActivateModel`` are scored by the old model, those after by the new one,
and none is dropped. ONNX runs inline on the event loop: a small batch costs microseconds and a
worker-thread hop would cost more (see ``bench/bench_scoring.py``). Building a session on
``ActivateModel`` also runs inline: tens of milliseconds once per swap, during which messages
queue in the mailbox rather than being dropped. Which registry, which model serves each role,
loading and swapping are ``levibot.ml.lifecycle.ModelLifecycle``'s; the actor routes to it.

Rule strategies read closed ``Bar``s, not feature vectors: each computes its own indicators at
its own periods (``[scoring.ema_cross]``, ``[scoring.rsi_macd]``, or a ``StartStrategy``'s
``params``) and decides as soon as they exist, without waiting for the feature schema's
200-bar warm-up. A bar is taken once per symbol in time order, at the symbol's first
timeframe; a malformed one is dropped and counted (it would poison an EMA for good).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from msgspec import Meta

from levibot.config import Config
from levibot.errors import ConfigError
from levibot.messages import (
    ActivateModel,
    Alert,
    AlertLevel,
    Bar,
    Features,
    Signal,
    SignalSide,
    StartStrategy,
    StopStrategy,
)
from levibot.metrics import Counter
from levibot.ml.governance import CanaryPolicy
from levibot.ml.lifecycle import ModelLifecycle
from levibot.ml.serving import ModelSet, Scored, ServingPolicy
from levibot.ml.watch import LiveWatch
from levibot.runtime.actor import Actor, ActorContext, Policy, Supervision
from levibot.settings import with_storage
from levibot.strategies import (
    RULES,
    STRATEGIES,
    EmaCrossParams,
    RsiMacdParams,
    RuleDecision,
    RuleHost,
    side_for,
)

Fraction = Annotated[float, Meta(ge=0, le=1)]
#: Matured rows between two updates of the live gauges and canary checks.
LIVE_EVERY = 100
LIVE_GAUGES = {
    "rows": "Matured rows in the live window",
    "auc": "Live ROC AUC of served probabilities on realised labels",
    "log_loss": "Live log loss of served probabilities on realised labels",
    "hit_rate": "Live share of rows whose side (long or not) matched the realised label",
}


class ScoringConfig(Config, frozen=True, kw_only=True):
    """The scoring actor's section (``[scoring]``)."""

    registry_dir: str = ""  # "": <[storage] data_dir>/models (also the PostgreSQL registry's cache)
    # Set here or in [storage]: models come from the PostgreSQL registry every process shares.
    postgres_dsn: str = ""
    postgres_schema: str = ""  # "": [storage]'s (public by default)
    model_id: str = ""  # "": the registry's active model
    shadow_model_id: str = ""
    canary_model_id: str = ""
    canary_fraction: Fraction = 0.0
    providers: tuple[str, ...] = ("cpu",)  # ("cuda", "cpu") to use a GPU when there is one
    graph: Literal["auto", "tree", "gemm"] = "auto"  # auto: gemm on CUDA, tree on CPU
    intra_op_num_threads: Annotated[int, Meta(ge=1)] = 1
    max_batch: Annotated[int, Meta(ge=1)] = 256  # rows per ONNX run
    strategies: tuple[str, ...] = ("onnx",)  # started at start; others by StartStrategy
    long_threshold: Fraction = 0.55
    short_threshold: Fraction = 0.45
    allow_short: bool = False  # below the short threshold: SHORT, or FLAT when False
    rule_probability: Fraction = 0.8  # probability a rule strategy's LONG carries
    # Each rule strategy's own parameters ([scoring.ema_cross] fast = 10, slow = 30).
    ema_cross: EmaCrossParams = EmaCrossParams()
    rsi_macd: RsiMacdParams = RsiMacdParams()
    atr_feature: str = "atr_14"  # the ONNX strategy's signals carry it (ATR exits)
    atr_period: Annotated[int, Meta(ge=1)] = 14  # a rule's signals carry ATR(period) of bars
    max_model_age_s: Annotated[float, Meta(ge=0)] = 30 * 86_400.0  # 0: never expires
    drift_tolerance: Annotated[float, Meta(ge=0)] = 0.1  # × training range, on each side
    drift_window: Annotated[int, Meta(ge=1)] = 500  # rows
    drift_max_fraction: Fraction = 0.05
    # Live metrics on realised outcomes (labels mature ``horizon`` bars later), and when a
    # canary is rolled back: worse than the active model on the same rows by these margins.
    live_window: Annotated[int, Meta(ge=10)] = 2_000  # matured rows per live metric
    canary_min_rows: Annotated[int, Meta(ge=1)] = 500
    canary_max_log_loss_excess: Annotated[float, Meta(ge=0)] = 0.02
    canary_max_auc_shortfall: Annotated[float, Meta(ge=0)] = 0.05


class ScoringActor(Actor[ScoringConfig]):
    """Hosts the strategies; emits one ``Signal`` per decision."""

    name = "scoring"
    consumes = (Features, Bar, StartStrategy, StopStrategy, ActivateModel)
    emits = (Signal, Alert)
    config_type = ScoringConfig
    supervision = Supervision(policy=Policy.SKIP)
    partitioned = True  # per-symbol strategy state (last crossing): replicas split the symbols
    max_batch = 4096

    def __init__(self, ctx: ActorContext, config: ScoringConfig, *, schema: Any = None) -> None:
        super().__init__(ctx, config)
        self._schema = schema
        self.policy = ServingPolicy(
            max_batch=config.max_batch,
            long_threshold=config.long_threshold,
            short_threshold=config.short_threshold,
            allow_short=config.allow_short,
            canary_fraction=config.canary_fraction,
            max_model_age_s=config.max_model_age_s,
            drift_tolerance=config.drift_tolerance,
            drift_window=config.drift_window,
            drift_max_fraction=config.drift_max_fraction,
        )
        self.models = ModelSet(self.policy)
        self.running: set[str] = set()
        self._owned: dict[str, bool] = {}  # symbol -> this replica owns it (``_rules_on``)
        self._warned: set[tuple[str, str]] = set()
        self._alerts = 0
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], Counter] = {}
        self._watch = LiveWatch(
            window=config.live_window,
            every=LIVE_EVERY,
            policy=CanaryPolicy(
                min_rows=config.canary_min_rows,
                max_log_loss_excess=config.canary_max_log_loss_excess,
                max_auc_shortfall=config.canary_max_auc_shortfall,
            ),
        )

    def _counter(self, name: str, help_: str, **labels: str) -> Counter:
        key = (name, tuple(sorted(labels.items())))
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = self.ctx.metrics.counter(name, help_, **labels)
        return c

    def _register_metrics(self) -> None:
        """Create the scoring counters and the gauges read from the served models."""
        m = self.ctx.metrics
        self._m_rows = m.counter("scoring_rows_total", "Feature rows scored by a model")
        self._m_runs = m.counter("scoring_runs_total", "ONNX Runtime runs")
        self._m_batch = m.histogram(
            "scoring_batch_rows", "Rows per ONNX run", buckets=(1, 4, 16, 64, 256, 1024, 4096)
        )
        self._m_skipped = m.counter(
            "scoring_skipped_total", "Rows not scored (warm-up or no model)"
        )
        m.gauge(
            "scoring_shadow_agreement",
            "Shadow vs served side agreement",
            fn=lambda: self.models.shadow_stats.agreement,
        )
        m.gauge(
            "scoring_shadow_drift",
            "Mean |p_served - p_shadow|",
            fn=lambda: self.models.shadow_stats.drift,
        )
        m.gauge(
            "scoring_model_loaded",
            "1 when an active model is loaded",
            fn=lambda: 1.0 if self.models.active else 0.0,
        )
        self._register_model_gauges()

    def _register_model_gauges(self) -> None:
        """Export the active model's age and input drift beside their limits (NaN: no model)."""
        m, policy = self.ctx.metrics, self.policy

        def age() -> float:
            active = self.models.active
            if active is None:
                return math.nan
            return (self.ctx.clock.now_ns() - active.card.created_at_ns) / 1e9

        def drift() -> float:
            active = self.models.active
            return active.drift.fraction if active is not None else math.nan

        m.gauge("scoring_model_age_seconds", "Age of the active model (node clock)", fn=age)
        m.gauge(
            "scoring_model_max_age_seconds",
            "Age past which a model is expired (0: never)",
            fn=lambda: policy.max_model_age_s,
        )
        m.gauge(
            "scoring_input_drift_fraction",
            "Fraction of recent rows outside the active model's training range",
            fn=drift,
        )
        m.gauge(
            "scoring_input_drift_max_fraction",
            "Drift fraction that raises an alert",
            fn=lambda: policy.drift_max_fraction,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def on_start(self) -> None:
        if self._schema is None:
            from levibot.features import SCHEMA

            self._schema = SCHEMA
        names = tuple(self._schema.names)
        self._hash = str(self._schema.hash)
        self._size = len(names)
        # With a DSN ([scoring] or [storage]) models come from the PostgreSQL registry.
        cfg = self.config = with_storage(self.config, self.ctx.storage, registry_dir="models")
        idx = {n: i for i, n in enumerate(names)}
        self._atr = idx.get(cfg.atr_feature, -1)
        self.rules = RuleHost(
            {name: getattr(cfg, name) for name in RULES},
            probability=cfg.rule_probability,
            allow_short=cfg.allow_short,
            atr_period=cfg.atr_period,
        )
        self._register_metrics()
        for name in cfg.strategies:
            self._start(name)
        self.lifecycle = ModelLifecycle(
            self.models,
            self.policy,
            schema_hash=self._hash,
            metrics=self.ctx.metrics,
            log=self.ctx.log,
            alert=self._alert,
            providers=cfg.providers,
            graph=cfg.graph,
            intra_op_num_threads=cfg.intra_op_num_threads,
        )
        await self.lifecycle.open(
            cfg.registry_dir, dsn=cfg.postgres_dsn, schema=cfg.postgres_schema
        )
        await self.lifecycle.start(
            cfg.model_id, cfg.shadow_model_id, cfg.canary_model_id, onnx="onnx" in self.running
        )

    async def on_stop(self) -> None:
        lifecycle = getattr(self, "lifecycle", None)  # None: on_start failed before it
        if lifecycle is not None:
            await lifecycle.close()

    def health(self) -> dict[str, Any]:
        """Return the model and the ONNX provider actually in use."""
        a, shadow, canary = self.models.active, self.models.shadow, self.models.canary
        return {
            "model_id": a.card.model_id if a else None,
            "provider": a.scorer.provider if a else None,
            "graph": a.scorer.graph if a else None,
            "strategies": sorted(self.running),
            "shadow": shadow.card.model_id if shadow else None,
            "canary": canary.card.model_id if canary else None,
        }

    def warm(self) -> None:
        """Re-score the last scored row with the active model, recording nothing (idle spin)."""
        self.models.warm()

    # -- messages --------------------------------------------------------------------------

    async def handle(self, msg: Any) -> None:
        if isinstance(msg, Bar):  # what handle_batch([msg]) does, without the list (per bar)
            decisions = self._rules_on(msg)
            if decisions:
                await self._publish_decisions(msg, decisions)
        else:
            await self.handle_batch([msg])

    async def handle_batch(self, msgs: Sequence[Any]) -> None:
        pending: list[Features] = []
        for msg in msgs:
            if isinstance(msg, Features):
                pending.append(msg)
                continue
            if pending:
                await self._score(pending)
                pending = []
            if isinstance(msg, Bar):
                decisions = self._rules_on(msg)
                if decisions:
                    await self._publish_decisions(msg, decisions)
            else:
                await self._command(msg)
        if pending:
            await self._score(pending)

    def _rules_on(self, bar: Bar) -> list[RuleDecision]:
        """Feed a closed bar to every running rule strategy of its symbol; return what they
        decided (to ``_publish_decisions``). Not a coroutine: once per bar of every backtest."""
        if self.running.isdisjoint(RULES):
            return []  # no rule is running: the model's hot path pays nothing for bars
        owned = self._owned.get(bar.symbol)
        if owned is None:  # per symbol once (a crc32 of its name per bar otherwise)
            owned = self._owned[bar.symbol] = self.ctx.owns(bar.symbol)
        if not owned:
            return []
        refused, decisions = self.rules.on_bar(bar, self.running)
        if refused:
            self._counter("scoring_bars_dropped_total", "Bars refused", reason=refused).inc()
        return decisions

    async def _publish_decisions(self, bar: Bar, decisions: list[RuleDecision]) -> None:
        """Publish the rules' decisions on ``bar`` as signals."""
        for r in decisions:
            d = r.decision
            await self._publish_signal(
                bar, r.strategy, d.side, d.probability, "", r.price, r.atr, r.spread_bps
            )

    async def _command(self, msg: Any) -> None:
        match msg:
            case StartStrategy():
                if msg.params and msg.strategy in RULES:
                    try:  # new parameters: a fresh rule, warmed up from the next bar
                        self.rules.configure(msg.strategy, dict(msg.params))
                    except ConfigError as exc:
                        await self._alert(AlertLevel.WARNING, "strategy.bad_params", str(exc))
                        return
                elif msg.params:
                    text = f"strategy {msg.strategy!r} takes no parameters"
                    await self._alert(AlertLevel.WARNING, "strategy.bad_params", text)
                    return
                if not self._start(msg.strategy):
                    await self._alert(
                        AlertLevel.WARNING,
                        "strategy.unknown",
                        f"unknown strategy {msg.strategy!r}; known: {STRATEGIES}",
                    )
            case StopStrategy():
                if msg.strategy in self.running:
                    self.running.discard(msg.strategy)
                    self.rules.reset(msg.strategy)
                    self.ctx.log.info("scoring.strategy_stopped", strategy=msg.strategy)
            case ActivateModel():
                await self.lifecycle.activate(msg.model_id, msg.role)
            case _:
                self.ctx.log.warning("scoring.unexpected_message", type=type(msg).__name__)

    def _start(self, name: str) -> bool:
        if name not in STRATEGIES:
            return False
        self.running.add(name)
        self.ctx.log.info("scoring.strategy_started", strategy=name)
        return True

    async def _alert(self, level: AlertLevel, code: str, text: str, ts_ingress: int = 0) -> None:
        now = self.ctx.clock.now_ns()
        self._alerts += 1
        await self.ctx.publish(
            Alert(
                ts_event=now,
                ts_init=now,
                ts_ingress=ts_ingress,
                level=level,
                source=self.name,
                code=code,
                text=text,
                alert_id=f"{self.name}:{code}:{now}:{self._alerts}",
            )
        )

    # -- scoring ---------------------------------------------------------------------------

    def _valid(self, msg: Features) -> bool:
        reason = ""
        if msg.schema_hash != self._hash:
            reason = "schema"
        elif len(msg.values) != self._size:
            reason = "size"
        if not reason:
            return True
        self._counter("scoring_rejected_total", "Features refused", reason=reason).inc()
        if (msg.symbol, reason) not in self._warned:  # once per symbol, not per tick
            self._warned.add((msg.symbol, reason))
            self.ctx.log.warning(
                "scoring.features_rejected",
                symbol=msg.symbol,
                reason=reason,
                schema_hash=msg.schema_hash,
                expected=self._hash,
            )
        return False

    async def _score(self, batch: list[Features]) -> None:
        msgs = [m for m in batch if self._valid(m)]
        if not msgs:
            return
        scored: Scored | None = None
        if "onnx" in self.running:
            rows = np.asarray([m.values for m in msgs], dtype=np.float32)
            scored = self.models.score(rows, [m.symbol for m in msgs], self.ctx.clock.now_ns())
            self._account(scored)
        pol = self.policy
        probs: list[float] = scored.p.tolist() if scored is not None else []
        for i, msg in enumerate(msgs):
            self.rules.note_spread(msg.symbol, msg.spread_bps)
            if scored is not None and probs[i] == probs[i]:  # not NaN: scored
                p = probs[i]
                side = side_for(p, pol.long_threshold, pol.short_threshold, pol.allow_short)
                atr = float(msg.values[self._atr]) if self._atr >= 0 else 0.0
                await self._publish_signal(
                    msg, "onnx", side, p, scored.model_ids[i], msg.price,
                    atr if atr == atr else 0.0, msg.spread_bps,
                )  # fmt: skip
        if scored is not None:
            for code, text in scored.alerts:
                await self._alert(AlertLevel.WARNING, code, text, msgs[0].ts_ingress)
            await self._watch_outcomes(msgs, scored)

    async def _watch_outcomes(self, msgs: list[Features], scored: Scored) -> None:
        """Feed the live metrics; roll the canary back when it fails or does worse."""
        active, canary = self.models.active, self.models.canary
        if active is None:
            return
        due = self._watch.observe(
            active.card,
            canary.card.model_id if canary is not None else None,
            [m.symbol for m in msgs],
            [m.price for m in msgs],
            scored,
        )
        if scored.canary_faults:
            await self._rollback_canary(scored.canary_faults[0])
        elif due:
            metrics = self.ctx.metrics
            for role, values in self._watch.summaries().items():
                for name, help_ in LIVE_GAUGES.items():
                    metrics.gauge(f"scoring_live_{name}", help_, role=role).set(values[name])
            why = self._watch.canary_verdict()
            if why is not None:
                await self._rollback_canary(why)

    async def _rollback_canary(self, why: str) -> None:
        canary = self.models.canary
        if canary is None:
            return
        model_id = canary.card.model_id
        self.lifecycle.drop("canary")
        self._watch.forget_canary()
        self.ctx.log.warning("scoring.canary_rolled_back", model_id=model_id, why=why)
        text = f"canary model {model_id} rolled back: {why}; its symbols are served by the active"
        await self._alert(AlertLevel.WARNING, "model.canary_rolled_back", text)

    def _account(self, scored: Scored) -> None:
        self._m_skipped.inc(scored.skipped)
        for n in scored.runs:
            self._m_runs.inc()
            self._m_rows.inc(n)
            self._m_batch.observe(n)
        if self.models.shadow is not None:
            stats = self.models.shadow_stats
            self.ctx.log.debug(
                "scoring.shadow", rows=stats.rows, agreement=stats.agreement, drift=stats.drift
            )

    async def _publish_signal(
        self,
        cause: Features | Bar,
        strategy: str,
        side: SignalSide,
        p: float,
        model_id: str,
        price: float,
        atr: float,
        spread_bps: float,
    ) -> None:
        await self.ctx.publish(
            Signal(
                ts_event=cause.ts_event,
                ts_init=self.ctx.clock.now_ns(),
                ts_ingress=cause.ts_ingress,
                symbol=cause.symbol,
                strategy=strategy,
                side=side,
                probability=p,
                confidence=abs(p - 0.5) * 2.0,
                price=price,
                atr=atr,
                spread_bps=spread_bps,
                model_id=model_id,
            )
        )
        self._counter("scoring_signals_total", "Signals emitted", strategy=strategy).inc()

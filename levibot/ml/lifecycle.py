"""Scoring's model lifecycle: the registry, the model each role serves, loading and swapping.

``ModelLifecycle`` opens the registry every process shares (``open_registry``: PostgreSQL when a
DSN is configured, else the local folder), serves at start the configured models or else the
registry's persisted active one, and on ``activate`` builds a ``Scorer`` for a role (fetching
the files from PostgreSQL into the local cache once, checking the feature schema), installs it
in the ``ModelSet`` and keeps one ``scoring_provider`` gauge per role. A model that cannot be
loaded is an alert and the old model keeps serving; one named in the configuration stops the
start instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from levibot.errors import InputError, LevibotError, SchemaMismatchError
from levibot.messages import AlertLevel
from levibot.metrics import Gauge, Metrics
from levibot.ml.card import ModelError
from levibot.ml.registries import ModelStore, open_registry
from levibot.ml.registry import check_schema
from levibot.ml.scorer import Scorer
from levibot.ml.serving import ModelSet, Served, ServingPolicy

#: ``alert(level, code, text)``: how the lifecycle reports a refused or failed model.
Alerter = Callable[[AlertLevel, str, str], Awaitable[None]]
ROLES = ("active", "shadow", "canary")


class ModelLifecycle:
    """Loads models from the registry into the roles of a ``ModelSet``."""

    def __init__(
        self,
        models: ModelSet,
        policy: ServingPolicy,
        *,
        schema_hash: str,
        metrics: Metrics,
        log: Any,
        alert: Alerter,
        providers: tuple[str, ...] = ("cpu",),
        graph: str = "auto",
        intra_op_num_threads: int = 1,
    ) -> None:
        self.models = models
        self.policy = policy
        self.schema_hash = schema_hash
        self.registry: ModelStore | None = None
        self._metrics = metrics
        self._log = log
        self._alert = alert
        self._scorer_options: dict[str, Any] = {
            "providers": providers,
            "graph": graph,
            "intra_op_num_threads": intra_op_num_threads,
        }
        self._gauges: dict[str, Gauge] = {}

    async def open(self, root: Path | str, *, dsn: str = "", schema: str = "public") -> None:
        """Open the registry: PostgreSQL when ``dsn`` is set (cached under ``root``)."""
        self.registry = await open_registry(
            root, dsn=dsn, schema=schema, schema_hash=self.schema_hash
        )

    async def close(self) -> None:
        """Release the registry's connections."""
        registry, self.registry = self.registry, None
        if registry is not None:
            await registry.close()

    @property
    def _store(self) -> ModelStore:
        if self.registry is None:
            raise ModelError("the model lifecycle is not open")
        return self.registry

    async def start(
        self, model_id: str = "", shadow_id: str = "", canary_id: str = "", *, onnx: bool = True
    ) -> None:
        """Serve ``model_id`` (else the registry's persisted active model) and the shadow and
        canary named; a configured id that cannot be loaded raises ``InputError``."""
        start_id = model_id
        if not start_id:
            card = await self._store.active()
            start_id = card.model_id if card else ""
        if start_id:
            named = "[scoring] model_id" if model_id else ""
            await self.activate(start_id, "active", quiet=True, required_by=named)
        elif onnx:
            self._log.warning("scoring.no_model", registry=self._store.where())
        for role, mid in (("shadow", shadow_id), ("canary", canary_id)):
            if mid:
                await self.activate(mid, role, quiet=True, required_by=f"[scoring] {role}_model_id")

    async def load(self, model_id: str) -> Scorer:
        """Return a scorer of ``model_id``; ``LevibotError`` when it cannot serve here."""
        store = self._store
        try:
            path = await store.path(model_id)  # from PostgreSQL: fetched into the cache once
        except LevibotError:
            raise
        except Exception as exc:  # asyncpg and OS errors: the swap fails, the actor lives
            raise ModelError(f"cannot fetch model {model_id} from {store.where()}: {exc}") from None
        card = store.local.get(model_id)
        check_schema(card, self.schema_hash)
        return Scorer(card, path, **self._scorer_options)

    async def activate(
        self, model_id: str, role: str, *, quiet: bool = False, required_by: str = ""
    ) -> bool:
        """Serve ``model_id`` in ``role`` and return True; on failure alert (or raise
        ``InputError`` when ``required_by`` names the setting) and keep the old model."""
        if role not in ROLES:
            await self._alert(AlertLevel.WARNING, "model.bad_role", f"unknown model role {role!r}")
            return False
        if not model_id and role != "active":
            self.drop(role)  # an empty id switches the shadow or canary off
            return True
        try:
            scorer = await self.load(model_id)
        except LevibotError as exc:
            if required_by:  # named in the configuration: the node does not start without it
                msg = f"cannot load {role} model {model_id!r}: {exc}"
                raise InputError(msg, required_by) from exc
            if not isinstance(exc, SchemaMismatchError):
                self._log.error("scoring.model_load_failed", model_id=model_id, error=str(exc))
                await self._alert(AlertLevel.WARNING, "model.load_failed", str(exc))
                return False
            self._log.error("scoring.model_refused", model_id=model_id, role=role, error=str(exc))
            await self._alert(AlertLevel.WARNING, "model.schema_mismatch", str(exc))
            return False
        self._forget_gauge(role)
        self.models.set(role, Served(scorer, self.policy))
        gauge = self._metrics.gauge(
            "scoring_provider",
            "ONNX provider in use (1 per role)",
            role=role,
            provider=scorer.provider,
            model_id=model_id,
        )
        gauge.set(1.0)
        self._gauges[role] = gauge
        self._log.info(
            "scoring.model_activated",
            model_id=model_id,
            role=role,
            provider=scorer.provider,
            graph=scorer.graph,
        )
        if not quiet:
            await self._alert(
                AlertLevel.INFO,
                "model.activated",
                f"{role} model {model_id} on {scorer.provider} ({scorer.graph})",
            )
        return True

    def drop(self, role: str) -> None:
        """Stop serving ``role``; its gauge leaves /metrics with the model it served."""
        self.models.set(role, None)
        self._forget_gauge(role)

    def _forget_gauge(self, role: str) -> None:
        old = self._gauges.pop(role, None)
        if old is not None:
            self._metrics.remove("scoring_provider", **old.labels)

"""The gateway's window on ``levibot.ml``: score one vector, list models, train in a thread.

``levibot.ml`` (ONNX Runtime, LightGBM) is imported lazily, on the first request that needs it,
so the gateway starts fast and runs on a node without the ML extras; a missing library is a 503.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from sidecars.gateway.errors import ApiError

Trainer = Callable[..., Any]  # (options) or (options, data)


def _ml_unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "ml_unavailable", f"the ML runtime is not available here: {exc}")


def _model_error() -> type[Exception]:
    from levibot.ml.card import ModelError

    return ModelError


class ModelBridge:
    """Score with the registry's active model, reloading it when the ``ACTIVE`` pointer moves."""

    def __init__(self, root: str | Path, *, postgres_dsn: str = "") -> None:
        self.root = Path(root)
        self.postgres_dsn = postgres_dsn  # where stored bars are read for /retrain
        self._scorer: Any = None

    def registry(self) -> Any:
        """Return a ``ModelRegistry`` on ``root``."""
        try:
            from levibot.ml.registry import ModelRegistry
        except ImportError as exc:
            raise _ml_unavailable(exc) from None
        return ModelRegistry(self.root)

    async def scorer(self) -> Any:
        """Return a scorer of the active model; 409 ``no_active_model`` when there is none."""
        registry = self.registry()
        model_error = _model_error()
        try:
            card = registry.active()
        except model_error as exc:
            raise ApiError(503, "registry_unreadable", str(exc)) from None
        if card is None:
            raise ApiError(409, "no_active_model", f"no active model in {self.root}; activate one")
        if self._scorer is None or self._scorer.model_id != card.model_id:
            try:
                from levibot.ml.scorer import Scorer
            except ImportError as exc:
                raise _ml_unavailable(exc) from None
            try:
                # Building an ONNX Runtime session takes milliseconds: off the event loop.
                self._scorer = await anyio.to_thread.run_sync(Scorer.from_registry, registry)
            except model_error as exc:
                raise ApiError(503, "model_unloadable", str(exc)) from None
        return self._scorer

    async def predict(
        self, features: Mapping[str, float] | None, values: Sequence[float] | None
    ) -> dict[str, Any]:
        """Return the model id, probability, side and confidence for one vector."""
        if (features is None) == (values is None):
            raise ApiError(422, "invalid_body", "give exactly one of 'features' or 'values'")
        scorer = await self.scorer()
        card = scorer.card
        if features is not None:
            missing = [n for n in card.features if n not in features]
            if missing:
                raise ApiError(422, "missing_features", f"missing features: {missing[:10]}")
            row = [0.0] * card.schema_size  # only the model's columns are read
            for name, index in zip(card.features, card.feature_indices, strict=True):
                row[index] = float(features[name])
        else:
            row = [float(v) for v in values or ()]
            if len(row) != card.schema_size:
                raise ApiError(
                    422, "wrong_length", f"expected {card.schema_size} values, got {len(row)}"
                )
        import numpy as np

        try:
            probability = float(scorer.predict(np.asarray([row]))[0])
        except _model_error() as exc:
            raise ApiError(422, "unscorable", str(exc)) from None
        long_at, short_at = card.thresholds
        side = "long" if probability >= long_at else "short" if probability <= short_at else "flat"
        return {
            "model_id": card.model_id,
            "probability": probability,
            "side": side,
            "confidence": abs(probability - 0.5) * 2,
        }

    def models(self) -> dict[str, Any]:
        """Return the registered models (without their bulky fold details) and the active id."""
        registry = self.registry()
        try:
            cards = registry.list()
            active = registry.active()
        except _model_error() as exc:
            raise ApiError(503, "registry_unreadable", str(exc)) from None
        keep = ("model_id", "created_at", "schema_hash", "schema_version", "horizon", "metrics")
        models = [{k: msgspec.to_builtins(getattr(c, k)) for k in keep} for c in cards]
        return {"active": None if active is None else active.model_id, "models": models}

    def exists(self, model_id: str) -> bool:
        """Return True when ``model_id`` is registered."""
        try:
            self.registry().get(model_id)
        except _model_error():
            return False
        return True

    def activate(self, model_id: str, *, force: bool = False) -> None:
        """Move the registry's active pointer to ``model_id`` if it passed the promotion gate
        (409 ``not_promoted`` otherwise, unless ``force``)."""
        from levibot.ml.governance import PromotionRefused, check_promotion

        registry = self.registry()
        try:
            check_promotion(registry.get(model_id), force=force)
            registry.activate(model_id)
        except PromotionRefused as exc:
            raise ApiError(409, "not_promoted", str(exc)) from None
        except _model_error() as exc:
            raise ApiError(503, "registry_unreadable", str(exc)) from None

    def check_data(self, data: Any) -> dict[str, Any] | None:
        """Return the stored-bars selection of a request (None: the default data). Whether
        they can be read is the job's to find out: its error says why not."""
        if data is None or data.source == "csv":
            return None
        ms = 1_000_000
        return {
            "symbol": data.symbol, "timeframe": data.timeframe, "venue": data.venue,
            "since": int(data.since_ms * ms) if data.since_ms is not None else None,
            "until": int(data.until_ms * ms) if data.until_ms is not None else None,
        }  # fmt: skip

    def default_trainer(self) -> Trainer:
        """Return a trainer that runs ``levibot.ml.train.train_model`` into this registry, on
        the real BTCUSDT klines or on the stored bars ``data`` selects."""

        def train(options: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> Any:
            import asyncio

            from levibot.config import convert
            from levibot.ml.train import TrainConfig, train_model

            config = convert(dict(options), TrainConfig, prefix="$.options")
            bars = None
            if data is not None:
                from levibot.ml.bars_pg import load_bars_pg
                from levibot.ml.card import ModelError

                if not self.postgres_dsn:
                    raise ModelError("no [storage] postgres_dsn here: no stored bars to read")

                bars = asyncio.run(  # a worker thread: its own loop
                    load_bars_pg(
                        self.postgres_dsn, symbol=data["symbol"], timeframe=data["timeframe"],
                        venue=data.get("venue"), since_ns=data.get("since"),
                        until_ns=data.get("until"),
                    )
                )  # fmt: skip
            card = train_model(config=config, registry=self.registry(), bars=bars, progress=False)
            return {"model_id": card.model_id, "metrics": card.metrics, "data": card.data}

        return train

    @staticmethod
    def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """Return the training options, validated now so a typo is a 422, not a failed job.

        Strictly, as JSON: the OpenAPI document gives ``TrainConfig``'s schema, which has no
        room for the config file's leniency ("5" for 5). As in JSON Schema, 5.0 is an integer.
        """
        try:
            from levibot.ml.train import TrainConfig
        except ImportError as exc:
            raise _ml_unavailable(exc) from None
        ints = {f.name for f in msgspec.structs.fields(TrainConfig) if _is_int(f.type)}
        checked = {
            k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v
            for k, v in options.items()
        }
        try:
            msgspec.convert(checked, TrainConfig)
        except msgspec.ValidationError as exc:
            message = str(exc).replace(" - at `$", " - at `$.options")
            raise ApiError(422, "invalid_options", f"invalid options: {message}") from None
        return checked


def _is_int(type_: Any) -> bool:
    """Return True for ``int`` and ``Annotated[int, ...]``."""
    return type_ is int or getattr(type_, "__origin__", None) is int

"""The gateway's window on ``levibot.ml``: score one vector, list, activate and roll back
models, train in a worker process.

The registry is the one every process shares (``levibot.ml.registries.open_registry``): with a
DSN the PostgreSQL registry, its files cached under ``root``, so a gateway with an empty data
dir sees the models another process registered and scores with them; without one the folder
``root``. ``levibot.ml`` (ONNX Runtime, LightGBM) is imported lazily, on the first request that
needs it, so the gateway starts fast and runs on a node without the ML extras; a missing
library is a 503, and so is a registry that cannot be read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from levibot.errors import LevibotError, SchemaMismatchError
from levibot.secrets import mask_text
from sidecars.gateway.errors import ApiError

Trainer = Callable[..., Any]  # (options) or (options, data)


def _ml_unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, "ml_unavailable", f"the ML runtime is not available here: {exc}")


def _model_error() -> type[Exception]:
    from levibot.ml.card import ModelError

    return ModelError


class ModelBridge:
    """Score with the registry's active model, reloading it when the active pointer moves."""

    def __init__(
        self, root: str | Path, *, postgres_dsn: str = "", postgres_schema: str = "public"
    ) -> None:
        self.root = Path(root)
        self.postgres_dsn = postgres_dsn  # the registry and the stored bars /retrain reads
        self.postgres_schema = postgres_schema
        self._store: Any = None
        self._opening = asyncio.Lock()
        self._scorer: Any = None
        self._trainer: Any = None  # a ChildTrainer, made on the first /retrain

    async def registry(self) -> Any:
        """Return the shared registry (a ``ModelStore``), opened on first use."""
        async with self._opening:
            if self._store is None:
                try:
                    from levibot.ml.registries import open_registry
                except ImportError as exc:
                    raise _ml_unavailable(exc) from None
                try:
                    self._store = await open_registry(
                        self.root, dsn=self.postgres_dsn, schema=self.postgres_schema
                    )
                except Exception as exc:  # asyncpg's and OS errors: PostgreSQL is away
                    raise _unreadable(exc) from None
        return self._store

    async def close(self) -> None:
        """End a training still running and release the registry's connections (idempotent)."""
        if self._trainer is not None:
            self._trainer.close()
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def _read(self, verb: str, *args: Any) -> Any:
        """Call the registry's ``verb``; its failures are 503 ``registry_unreadable``."""
        store = await self.registry()
        try:
            return await getattr(store, verb)(*args)
        except ApiError:
            raise
        except Exception as exc:  # a corrupt pointer, PostgreSQL away: the registry's fault
            raise _unreadable(exc) from None

    async def scorer(self) -> Any:
        """Return a scorer of the active model; 409 ``no_active_model`` when there is none."""
        card = await self._read("active")
        if card is None:
            where = (await self.registry()).where()
            raise ApiError(409, "no_active_model", f"no active model in {where}; activate one")
        if self._scorer is None or self._scorer.model_id != card.model_id:
            try:
                from levibot.ml.scorer import Scorer
            except ImportError as exc:
                raise _ml_unavailable(exc) from None
            path = await self._read("path", card.model_id)  # fetched from PostgreSQL once
            try:
                # Building an ONNX Runtime session takes milliseconds: off the event loop.
                self._scorer = await anyio.to_thread.run_sync(Scorer, card, path)
            except _model_error() as exc:
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

    async def models(self) -> dict[str, Any]:
        """Return the registered models (without their bulky fold details) and the active id."""
        cards = await self._read("list")
        active = await self._read("active")
        keep = ("model_id", "created_at", "schema_hash", "schema_version", "horizon", "metrics")
        models = [{k: msgspec.to_builtins(getattr(c, k)) for k in keep} for c in cards]
        return {"active": None if active is None else active.model_id, "models": models}

    async def exists(self, model_id: str) -> bool:
        """Return True when ``model_id`` is registered."""
        store = await self.registry()
        try:
            await store.get(model_id)
        except _model_error():
            return False
        except Exception as exc:
            raise _unreadable(exc) from None
        return True

    async def activate(self, model_id: str, *, force: bool = False) -> None:
        """Move the registry's persisted active pointer to ``model_id`` if it passed the
        promotion gate (409 ``not_promoted`` otherwise, unless ``force``) and was trained on
        the running feature schema (409 ``schema_mismatch``)."""
        from levibot.ml.governance import PromotionRefused
        from levibot.ml.registries import activate_gated

        store = await self.registry()
        try:
            await activate_gated(store, model_id, force=force)
        except PromotionRefused as exc:
            raise ApiError(409, "not_promoted", str(exc)) from None
        except SchemaMismatchError as exc:
            raise ApiError(409, "schema_mismatch", str(exc)) from None
        except Exception as exc:
            raise _unreadable(exc) from None

    async def rollback(self) -> str:
        """Move the persisted pointer back to the model active before; return its id (409
        ``nothing_to_roll_back`` when there was none)."""
        store = await self.registry()
        try:
            card = await store.rollback()
        except SchemaMismatchError as exc:
            raise ApiError(409, "schema_mismatch", str(exc)) from None
        except _model_error() as exc:
            if "nothing to roll back" in str(exc):
                raise ApiError(409, "nothing_to_roll_back", str(exc)) from None
            raise _unreadable(exc) from None
        except Exception as exc:
            raise _unreadable(exc) from None
        return str(card.model_id)

    def check_data(self, data: Any) -> dict[str, Any] | None:
        """Return the stored-bars selection of a request (None: the real BTCUSDT klines, a
        download). Without ``data``, a gateway with a DSN trains on the stored BTCUSDT 1h bars:
        in the pods the store persisted them and the download's network is closed, so the
        download stays a CLI convenience. Whether the bars can be read is the job's to find
        out: its error says why not."""
        if data is None and self.postgres_dsn:
            from sidecars.gateway.schemas import RetrainData

            data = RetrainData(source="postgres")
        if data is None or data.source == "csv":
            return None
        ms = 1_000_000
        return {
            "symbol": data.symbol, "timeframe": data.timeframe, "venue": data.venue,
            "since": int(data.since_ms * ms) if data.since_ms is not None else None,
            "until": int(data.until_ms * ms) if data.until_ms is not None else None,
        }  # fmt: skip

    def default_trainer(self) -> Trainer:
        """Return a trainer that runs ``levibot.ml.retrain.retrain`` in a child process (the
        gateway's loop never waits on LightGBM), on the real BTCUSDT klines or on the stored
        bars ``data`` selects, registering into this gateway's registry (PostgreSQL with a
        DSN: every process sees the new model)."""
        if self._trainer is None:
            from levibot.ml.retrain import ChildTrainer

            self._trainer = ChildTrainer(
                root=str(self.root), dsn=self.postgres_dsn, schema=self.postgres_schema
            )
        return self._trainer  # type: ignore[no-any-return]

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


def _unreadable(exc: BaseException) -> ApiError:
    """A registry that cannot be read: 503, never a password from a DSN in the message."""
    text = str(exc) if isinstance(exc, LevibotError) else f"{type(exc).__name__}: {exc}"
    return ApiError(503, "registry_unreadable", mask_text(text))

"""Retraining as a job: train, then register into the registry every process shares.

``retrain`` is what ``POST /retrain`` runs. ``in_process`` runs it in a fresh child process
(``spawn``): LightGBM and the feature pipeline hold the GIL for long stretches, so training in
a thread of the gateway would stall its event loop; in a child it costs the gateway nothing
but the wait of one worker thread, and the child's memory is returned when it exits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from levibot.ml.card import ModelError


def retrain(
    options: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    *,
    root: str,
    dsn: str = "",
    schema: str = "public",
) -> dict[str, Any]:
    """Train with ``options`` (``TrainConfig`` fields) on the real BTCUSDT klines, or on the
    stored bars ``data`` selects (``symbol``, ``timeframe``, ``venue``, ``since``/``until`` in
    ns), and register the model: in PostgreSQL when ``dsn`` is set (cached under ``root``),
    else in the folder ``root``. Return the model id, its metrics and its data."""
    from levibot.config import convert
    from levibot.ml.registries import open_registry, publish
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.train import TrainConfig, train_model

    config = convert(dict(options), TrainConfig, prefix="$.options")
    bars = None
    if data is not None:
        from levibot.ml.bars_pg import load_bars_pg

        if not dsn:
            raise ModelError("no [storage] postgres_dsn here: no stored bars to read")
        bars = asyncio.run(
            load_bars_pg(
                dsn, symbol=data["symbol"], timeframe=data["timeframe"], venue=data.get("venue"),
                since_ns=data.get("since"), until_ns=data.get("until"), schema=schema,
            )
        )  # fmt: skip
    local = ModelRegistry(root)  # the folder itself, or the PostgreSQL registry's cache
    card = train_model(config=config, registry=local, bars=bars, progress=False)

    async def register() -> None:
        store = await open_registry(root, dsn=dsn, schema=schema)
        try:
            await publish(store, local.path(card.model_id))
        finally:
            await store.close()

    asyncio.run(register())
    return {"model_id": card.model_id, "metrics": card.metrics, "data": card.data}


def in_process(
    options: Mapping[str, Any], data: Mapping[str, Any] | None = None, **where: Any
) -> dict[str, Any]:
    """Run ``retrain`` in a child process and return its result (its exception is raised)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(retrain, dict(options), None if data is None else dict(data), **where)
        return job.result()

"""Retraining as a job: train, then register into the registry every process shares.

``retrain`` is what ``POST /retrain`` runs. ``ChildTrainer`` runs it in a fresh child process
(``spawn``): LightGBM and the feature pipeline hold the GIL for long stretches, so training in
a thread of the gateway would stall its event loop; in a child it costs the gateway nothing
but the wait of one worker thread, the child's memory is returned when it exits, and a
stopping gateway ends it rather than waiting for it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import threading
from collections.abc import Mapping
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


class ChildTrainer:
    """Runs ``retrain`` in a child process per call; ``close`` ends the children still running.

    A call blocks its (worker) thread until the child answers. A child is started with
    ``spawn`` (a fresh interpreter: no copy of the caller's threads or event loop) and is a
    daemon, so a stopping gateway never waits for a training to finish.
    """

    def __init__(self, **where: Any) -> None:
        self._where = where  # retrain's root, dsn and schema
        self._live: set[Any] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __call__(
        self, options: Mapping[str, Any], data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Train in a child process and return its result; its error is raised here."""
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        args = (sender, dict(options), None if data is None else dict(data), self._where)
        child = context.Process(target=_child, args=args, daemon=True, name="levibot-retrain")
        with self._lock:
            if self._closed:
                raise ModelError("the trainer is closed: the gateway is stopping")
            child.start()
            self._live.add(child)
        sender.close()  # the child holds the only sending end: its death is our EOF
        try:
            ok, value = receiver.recv()
        except EOFError:
            child.join()
            raise ModelError(
                f"the training process ended without a result (exit code {child.exitcode})"
            ) from None
        finally:
            receiver.close()
            child.join()
            with self._lock:
                self._live.discard(child)
        if not ok:
            raise value
        return dict(value)

    def close(self) -> None:
        """Refuse new calls and terminate the children still training."""
        with self._lock:
            self._closed = True
            live = list(self._live)
        for child in live:
            child.terminate()

    @property
    def running(self) -> int:
        """Return how many children are training now."""
        with self._lock:
            return len(self._live)


def _child(sender: Any, options: dict[str, Any], data: Any, where: dict[str, Any]) -> None:
    """The child's body: send ``(True, result)`` or ``(False, exception)``."""
    try:
        sender.send((True, retrain(options, data, **where)))
    except BaseException as exc:
        try:
            pickle.loads(pickle.dumps(exc))  # what the parent can rebuild
        except Exception:
            exc = ModelError(f"{type(exc).__name__}: {exc}")
        sender.send((False, exc))
    finally:
        sender.close()

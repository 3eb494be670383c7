"""One model registry for every process: PostgreSQL when a DSN is configured, else the folder.

The gateway, the scoring actor, ``levibot models``, ``levibot train`` and ``POST /retrain`` all
open their registry here, so with a DSN they read and move the same rows (``PgModelRegistry``:
cards, files and the activation stack in the database, cached as files under ``root``), and
without one the same local folder (``ModelRegistry``, the embedded default). Both answer the
async API of ``ModelStore``; ``local`` is the folder a trainer writes into and ``Scorer`` reads.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Protocol

from levibot.ml.card import ModelCard
from levibot.ml.registry import ModelRegistry


class ModelStore(Protocol):
    """A model registry as every process sees it (``open_registry`` returns one)."""

    @property
    def local(self) -> ModelRegistry:
        """The local folder: where training writes and where ``path`` puts a model's files."""
        ...

    def where(self) -> str:
        """Say where the models live, for messages (never a password)."""
        ...

    async def list(self) -> builtins.list[ModelCard]: ...
    async def get(self, model_id: str) -> ModelCard: ...
    async def active(self) -> ModelCard | None: ...
    async def history(self) -> builtins.list[str]: ...
    async def activate(self, model_id: str) -> ModelCard: ...
    async def rollback(self) -> ModelCard: ...
    async def register(self, source: Path | str) -> ModelCard: ...
    async def path(self, model_id: str) -> Path: ...
    async def close(self) -> None: ...


class FolderRegistry:
    """``ModelRegistry`` behind the async ``ModelStore`` API (file operations, no awaits)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    @property
    def local(self) -> ModelRegistry:
        """The folder itself."""
        return self._registry

    def where(self) -> str:
        """Return the folder's path."""
        return str(self._registry.root)

    async def list(self) -> builtins.list[ModelCard]:
        """Return every registered model's card, oldest first."""
        return self._registry.list()

    async def get(self, model_id: str) -> ModelCard:
        """Return the card of ``model_id``."""
        return self._registry.get(model_id)

    async def active(self) -> ModelCard | None:
        """Return the active model's card, or None."""
        return self._registry.active()

    async def history(self) -> builtins.list[str]:
        """Return the previously active model ids, oldest first."""
        return self._registry.history()

    async def activate(self, model_id: str) -> ModelCard:
        """Move the ``ACTIVE`` pointer to ``model_id``."""
        return self._registry.activate(model_id)

    async def rollback(self) -> ModelCard:
        """Re-activate the model active before the current one."""
        return self._registry.rollback()

    async def register(self, source: Path | str) -> ModelCard:
        """Copy the model directory ``source`` in (nothing to copy when it is already here)."""
        src = Path(source)
        if src.parent.resolve() == self._registry.root.resolve():
            return self._registry.get(src.name)
        return self._registry.register(src)

    async def path(self, model_id: str) -> Path:
        """Return the directory of ``model_id``."""
        return self._registry.path(model_id)

    async def close(self) -> None:
        """Nothing to release."""


async def open_registry(
    root: Path | str, *, dsn: str = "", schema: str = "public", schema_hash: str | None = None
) -> ModelStore:
    """Open the registry: PostgreSQL (cached under ``root``) when ``dsn`` is set, else the
    folder ``root``. ``schema_hash`` defaults to the running feature schema's."""
    if not dsn:
        return FolderRegistry(ModelRegistry(root, schema_hash=schema_hash))
    from levibot.ml.registry_pg import PgModelRegistry

    registry = PgModelRegistry(dsn, root, schema=schema, schema_hash=schema_hash)
    await registry.open()
    return registry


async def activate_gated(store: ModelStore, model_id: str, *, force: bool = False) -> ModelCard:
    """Move ``store``'s persisted pointer to ``model_id`` if it passed the promotion gate
    (``PromotionRefused`` otherwise, unless ``force``) and was trained on the running feature
    schema (``SchemaMismatchError``). What the gateway, the CLI and the bot do before they tell
    the running scorers with ``ActivateModel``."""
    from levibot.ml.governance import check_promotion

    check_promotion(await store.get(model_id), force=force)
    return await store.activate(model_id)


async def publish(
    store: ModelStore, model_dir: Path | str, *, activate: bool = False, force: bool = False
) -> ModelCard:
    """Register a trained model's directory; with ``activate``, make it active if it passes
    the promotion gate (``PromotionRefused`` otherwise, after it is registered)."""
    card = await store.register(model_dir)
    if activate:
        await activate_gated(store, card.model_id, force=force)
    return card

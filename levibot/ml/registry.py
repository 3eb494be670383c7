"""The model registry: a local folder of model directories and an ``ACTIVE`` pointer.

Layout: ``<root>/<model_id>/{card.json, model.txt, model.onnx, model.gemm.onnx}`` and
``<root>/ACTIVE``, a JSON document ``{"active": id, "history": [older ids, oldest first]}`` so
``rollback`` returns to the model active before. Writes go through a temporary file and
``os.replace``, so a reader never sees half a pointer.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from levibot.errors import SchemaMismatchError
from levibot.ml.card import CARD_FILE, MODEL_GEMM, MODEL_ONNX, MODEL_TXT, ModelCard, ModelError
from levibot.storage.atomic import write_atomic_bytes

ACTIVE_FILE = "ACTIVE"
MODEL_FILES = (CARD_FILE, MODEL_TXT, MODEL_ONNX, MODEL_GEMM)


def default_registry_dir() -> Path:
    """Return ``<[storage] data_dir>/models``, ``[storage]`` as the environment sets it."""
    from levibot.settings import storage_from_env

    return Path(storage_from_env().data_dir) / "models"


def running_schema_hash() -> str:
    """Return the hash of the feature schema this process computes."""
    try:
        from levibot.features import SCHEMA
    except ImportError as exc:  # the feature module is a core part; say so plainly
        raise ModelError(f"cannot read the running feature schema: {exc}") from None
    return str(SCHEMA.hash)


def check_schema(card: ModelCard, expected: str) -> None:
    """Raise ``SchemaMismatchError`` when ``card`` was trained on another feature schema."""
    if card.schema_hash != expected:
        raise SchemaMismatchError(
            f"model {card.model_id} was trained on feature schema {card.schema_hash} "
            f"(version {card.schema_version}), but the running schema is {expected}; "
            "retrain it with `levibot train`"
        )


class ModelRegistry:
    """Models in a local folder; ``schema_hash`` defaults to the running feature schema's."""

    def __init__(self, root: Path | str, *, schema_hash: str | None = None) -> None:
        self.root = Path(root)
        self._schema_hash = schema_hash

    @property
    def schema_hash(self) -> str:
        """Return the feature schema hash activation requires."""
        if self._schema_hash is None:
            self._schema_hash = running_schema_hash()
        return self._schema_hash

    def path(self, model_id: str) -> Path:
        """Return the directory of ``model_id``; ``ModelError`` when it is not registered."""
        if not model_id or "/" in model_id or model_id.startswith("."):
            raise ModelError(f"invalid model id {model_id!r}")
        path = self.root / model_id
        if not (path / CARD_FILE).is_file():
            raise ModelError(f"unknown model {model_id!r} in {self.root}")
        return path

    def get(self, model_id: str) -> ModelCard:
        """Return the card of ``model_id``."""
        return ModelCard.load(self.path(model_id))

    def list(self) -> builtins.list[ModelCard]:
        """Return every registered model's card, oldest first."""
        if not self.root.is_dir():
            return []
        cards = [
            ModelCard.load(d)
            for d in self.root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / CARD_FILE).is_file()
        ]
        return sorted(cards, key=lambda c: (c.created_at_ns, c.model_id))

    def register(
        self, source: Path | str | Mapping[str, Path | str], *, replace: bool = True
    ) -> ModelCard:
        """Copy a model (a directory, or a mapping file name → path) into the registry.

        A model already there under the same id is replaced (a retrain within the same second
        can give the same id), or kept with ``replace=False`` (a cache fetching what another
        process fetched first: the same files)."""
        files: dict[str, Path]
        if isinstance(source, Mapping):
            files = {name: Path(p) for name, p in source.items()}
        else:
            src = Path(source)
            files = {name: src / name for name in MODEL_FILES if (src / name).is_file()}
        if CARD_FILE not in files:
            raise ModelError(f"no {CARD_FILE} in {source}")
        card = ModelCard.load(files[CARD_FILE])
        for required in (MODEL_ONNX,):
            if required not in files:
                raise ModelError(f"model {card.model_id} has no {required}")
        for name in files:
            if name not in MODEL_FILES:
                raise ModelError(f"unexpected model file {name!r}")
        dest = self.root / card.model_id
        if dest.is_dir() and not replace:
            return card
        # A folder of our own (two processes may share the cache), renamed into place whole:
        # a reader never sees a model half-written. Replacing moves the old one aside first, so
        # only then is the model missing, for the instant between two renames.
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{card.model_id}.", dir=self.root))
        old = self.root / f"{staging.name}.old"
        try:
            for name, path in files.items():
                shutil.copyfile(path, staging / name)
            if replace and dest.is_dir():
                os.rename(dest, old)
            try:
                os.rename(staging, dest)
            except OSError:
                if replace or not dest.is_dir():
                    raise
                # another process put the same model there first: theirs stays
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return card

    def _pointer(self) -> tuple[str | None, builtins.list[str]]:
        try:
            doc = json.loads((self.root / ACTIVE_FILE).read_text())
        except FileNotFoundError:
            return None, []
        except (ValueError, OSError) as exc:
            raise ModelError(f"corrupt {self.root / ACTIVE_FILE}: {exc}") from None
        return doc.get("active"), list(doc.get("history", []))

    def _set_pointer(self, active: str | None, history: builtins.list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"active": active, "history": history}
        write_atomic_bytes(self.root / ACTIVE_FILE, json.dumps(doc, indent=2).encode())

    def active(self) -> ModelCard | None:
        """Return the active model's card, or None when none is active."""
        active, _ = self._pointer()
        return self.get(active) if active else None

    def history(self) -> builtins.list[str]:
        """Return the previously active model ids, oldest first."""
        return self._pointer()[1]

    def activate(self, model_id: str) -> ModelCard:
        """Make ``model_id`` active; ``SchemaMismatchError`` when its schema differs."""
        card = self.get(model_id)
        check_schema(card, self.schema_hash)
        active, history = self._pointer()
        if active == model_id:
            return card
        if active:
            history.append(active)
        self._set_pointer(model_id, history)
        return card

    def rollback(self) -> ModelCard:
        """Re-activate the model active before the current one and return its card."""
        _, history = self._pointer()
        while history:
            previous = history.pop()
            try:
                card = self.get(previous)
            except ModelError:
                continue  # deleted since; roll further back
            check_schema(card, self.schema_hash)
            self._set_pointer(previous, history)
            return card
        raise ModelError("nothing to roll back to: no previously active model")

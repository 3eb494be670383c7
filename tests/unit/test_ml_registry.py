"""The local model registry: register, list, activate, roll back, refuse other schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.errors import SchemaMismatchError
from levibot.ml.card import ModelCard, ModelError
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model

HASH = "feedfacecafebeef"


def _model(tmp: Path, model_id: str, schema_hash: str = HASH, created: int = 1) -> Path:
    out = tmp / "build" / model_id
    make_model(
        out,
        model_id=model_id,
        schema_hash=schema_hash,
        schema_size=6,
        columns=(1, 3),
        trees=3,
        rows=300,
        created_at_ns=created,
    )
    return out


def _active_id(reg: ModelRegistry) -> str | None:
    card = reg.active()
    return card.model_id if card else None


def test_register_list_get_and_path(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models", schema_hash=HASH)
    assert reg.list() == [] and reg.active() is None
    b = reg.register(_model(tmp_path, "b", created=2))
    a = reg.register(_model(tmp_path, "a", created=1))
    assert [c.model_id for c in reg.list()] == ["a", "b"]
    assert reg.get("b") == b
    assert (reg.path("a") / "model.onnx").is_file()
    assert ModelCard.load(reg.path("a")) == a
    with pytest.raises(ModelError, match="unknown model"):
        reg.get("c")
    with pytest.raises(ModelError, match="invalid model id"):
        reg.path("../etc")


def test_registering_an_id_again_replaces_it_unless_told_to_keep_it(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models", schema_hash=HASH)
    reg.register(_model(tmp_path / "first", "m", created=1))
    # A retrain within the same second can give the same id: the newer one is the model.
    again = reg.register(_model(tmp_path / "second", "m", created=2))
    assert reg.get("m") == again and again.created_at_ns == 2
    # A cache fetching what another process fetched first keeps the copy there.
    reg.register(_model(tmp_path / "third", "m", created=3), replace=False)
    assert reg.get("m").created_at_ns == 2
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]  # nothing staged left


def test_activate_and_rollback_walk_the_history(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models", schema_hash=HASH)
    for i, mid in enumerate(("m1", "m2", "m3")):
        reg.register(_model(tmp_path, mid, created=i))
    reg.activate("m1")
    reg.activate("m2")
    reg.activate("m3")
    reg.activate("m3")  # idempotent: no history entry
    assert _active_id(reg) == "m3" and reg.history() == ["m1", "m2"]
    assert reg.rollback().model_id == "m2"
    assert reg.rollback().model_id == "m1"
    with pytest.raises(ModelError, match="nothing to roll back"):
        reg.rollback()
    assert _active_id(reg) == "m1"


def test_activation_refuses_a_model_of_another_feature_schema(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models", schema_hash=HASH)
    reg.register(_model(tmp_path, "ok"))
    reg.register(_model(tmp_path, "old", schema_hash="0123456789abcdef"))
    reg.activate("ok")
    with pytest.raises(SchemaMismatchError, match=r"0123456789abcdef.*feedfacecafebeef"):
        reg.activate("old")
    assert _active_id(reg) == "ok"


def test_register_refuses_a_directory_without_a_card(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no card\.json"):
        ModelRegistry(tmp_path / "models").register(tmp_path / "empty")


def test_a_corrupt_card_is_a_clear_error(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models", schema_hash=HASH)
    reg.register(_model(tmp_path, "x"))
    (reg.root / "x" / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid model card"):
        reg.get("x")

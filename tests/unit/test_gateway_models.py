"""The gateway's model routes on the local folder registry (the embedded default): activation
and rollback move the persisted pointer first, then publish the command the scorers follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.features import SCHEMA
from levibot.messages import ActivateModel
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model
from tests.unit.test_gateway_rest import call
from tests.unit.test_gateway_support import running_gateway

pytestmark = pytest.mark.anyio


def register(tmp_path: Path, *ids: str) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    for i, mid in enumerate(ids):
        make_model(tmp_path / "build" / mid, model_id=mid, schema_hash=SCHEMA.hash,
                   schema_size=len(SCHEMA.names), columns=(0, 1), trees=2, rows=200,
                   created_at_ns=i + 1)  # fmt: skip
        registry.register(tmp_path / "build" / mid)
    return registry


async def test_activate_then_rollback_move_the_pointer_and_tell_the_scorers(
    tmp_path: Path,
) -> None:
    registry = register(tmp_path, "m1", "m2")
    async with running_gateway(tmp_path) as g:
        status, err = await call(g, "POST", "/models/rollback")
        assert (status, err["error"]["code"]) == (409, "nothing_to_roll_back")
        for mid in ("m1", "m2"):
            status, _ = await call(g, "POST", "/models/activate", json={"model_id": mid})
            assert status == 202
        assert registry.active().model_id == "m2"  # type: ignore[union-attr]
        status, accepted = await call(g, "POST", "/models/rollback")
        assert (status, accepted["command"]) == (202, "ActivateModel")
        assert registry.active().model_id == "m1"  # type: ignore[union-attr]
        sent = [(c.model_id, c.role) for c in g.ctx.of_type(ActivateModel)]
        assert sent == [("m1", "active"), ("m2", "active"), ("m1", "active")]
        assert g.ctx.of_type(ActivateModel)[-1].command_id == accepted["command_id"]
        status, listed = await call(g, "GET", "/models", "read")
        assert listed["active"] == "m1"
        # Rollback is an admin command: a read key is refused.
        assert (await call(g, "POST", "/models/rollback", "read"))[0] == 403
        assert registry.active().model_id == "m1"  # type: ignore[union-attr]


async def test_a_model_of_another_feature_schema_is_refused_and_the_pointer_stays(
    tmp_path: Path,
) -> None:
    registry = register(tmp_path, "good")
    make_model(tmp_path / "build" / "other", model_id="other", schema_hash="0" * 16,
               schema_size=6, columns=(0, 1), trees=2, rows=200)  # fmt: skip
    registry.register(tmp_path / "build" / "other")
    async with running_gateway(tmp_path) as g:
        assert (await call(g, "POST", "/models/activate", json={"model_id": "good"}))[0] == 202
        status, err = await call(g, "POST", "/models/activate", json={"model_id": "other"})
        assert (status, err["error"]["code"]) == (409, "schema_mismatch")
        assert registry.active().model_id == "good"  # type: ignore[union-attr]
        assert [c.model_id for c in g.ctx.of_type(ActivateModel)] == ["good"]


async def test_an_unreadable_pointer_is_a_503_not_a_crash(tmp_path: Path) -> None:
    register(tmp_path, "m1")
    (tmp_path / "models" / "ACTIVE").write_text("{not json")
    async with running_gateway(tmp_path) as g:
        status, err = await call(g, "GET", "/models", "read")
        assert (status, err["error"]["code"]) == (503, "registry_unreadable")
        status, err = await call(g, "POST", "/predict", "read", json={"values": [0.0]})
        assert (status, err["error"]["code"]) == (503, "registry_unreadable")
        assert g.ctx.of_type(ActivateModel) == []

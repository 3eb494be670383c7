"""``/activate`` and ``/rollback`` from Telegram, against the Bot API stand-in: the registry's
persisted pointer moves (the local folder, or the PostgreSQL registry every process shares),
then ``ActivateModel`` tells the running scorers; refusals say why and move nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from levibot.clock import LiveClock
from levibot.features import SCHEMA
from levibot.messages import ActivateModel
from levibot.ml.registries import ModelStore, open_registry
from levibot.ml.testing import make_model
from levibot.storage.testing import temp_database
from levibot.testing import RecordingContext
from tests.fakes.botapi import FakeBotAPI
from tests.integration.telegram_helpers import ADMIN, ALICE, TOKEN, command, config, running_bot

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(params=["folder", "postgres"])
async def dsn(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "folder":
        yield ""
        return
    async with temp_database() as url:
        yield url


async def registered(tmp_path: Path, dsn: str) -> ModelStore:
    """Register m1, m2 (promoted) and m3 (not promoted) as a trainer would, elsewhere."""
    store = await open_registry(tmp_path / "trainer", dsn=dsn)
    for i, mid in enumerate(("m1", "m2", "m3")):
        out = tmp_path / "build" / mid
        make_model(out, model_id=mid, schema_hash=SCHEMA.hash, schema_size=len(SCHEMA.names),
                   columns=(0, 1), trees=2, rows=200, created_at_ns=i + 1)  # fmt: skip
        if mid == "m3":
            doc = msgspec.json.decode((out / "card.json").read_bytes())
            doc["promotion"] = {"passed": False, "why": "no better than holding"}
            (out / "card.json").write_bytes(msgspec.json.encode(doc))
        await store.register(out)
    return store


async def test_activate_and_rollback_move_the_persisted_pointer_then_tell_the_scorers(
    tmp_path: Path, dsn: str
) -> None:
    # Folder: the bot's models_root is the trainer's folder (one data dir, one binary).
    # PostgreSQL: the bot has a cache of its own and sees the trainer's rows.
    trainer = await registered(tmp_path, dsn)
    root = tmp_path / ("trainer" if not dsn else "bot-cache")
    ctx = RecordingContext("telegram", clock=LiveClock())

    async def active() -> str | None:
        card = await trainer.active()
        return card.model_id if card else None

    try:
        async with (
            FakeBotAPI(TOKEN) as api,
            running_bot(config(api, tmp_path, postgres_dsn=dsn, models_root=str(root)), ctx),
        ):
            assert "admins only" in await command(api, ALICE, "/activate m1")
            assert "admins only" in await command(api, ALICE, "/rollback")
            for bad in ("/activate", "/activate m1 now", "/activate a b c", "/activate <x>"):
                assert "Usage: /activate" in await command(api, ADMIN, bad)
            assert "unknown model 'ghost'" in await command(api, ADMIN, "/activate ghost")
            assert "nothing to roll back" in await command(api, ADMIN, "/rollback")
            assert ctx.of_type(ActivateModel) == [] and await active() is None

            assert "Model m1 is active" in await command(api, ADMIN, "/activate m1")
            assert await active() == "m1"
            assert "Model m2 is active" in await command(api, ADMIN, "/activate m2")
            refused = await command(api, ADMIN, "/activate m3")
            assert "Not changed" in refused and "no better than holding" in refused
            assert await active() == "m2"
            assert "Rolled back to model m1" in await command(api, ADMIN, "/rollback")
            assert await active() == "m1"
            assert "Model m3 is active" in await command(api, ADMIN, "/activate m3 force")
            assert await active() == "m3"
    finally:
        await trainer.close()
    sent = ctx.of_type(ActivateModel)
    assert [(c.model_id, c.role) for c in sent] == [
        ("m1", "active"), ("m2", "active"), ("m1", "active"), ("m3", "active")]  # fmt: skip
    assert {c.issued_by for c in sent} == {f"telegram:{ADMIN}"}


async def test_an_unreachable_registry_is_said_and_nothing_is_sent(tmp_path: Path) -> None:
    from levibot.testing import free_port

    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nowhere"
    ctx = RecordingContext("telegram", clock=LiveClock())
    async with (
        FakeBotAPI(TOKEN) as api,
        running_bot(config(api, tmp_path, postgres_dsn=dsn), ctx),
    ):
        answer = await command(api, ADMIN, "/activate m1")
        assert "cannot be reached" in answer and "s3cret" not in answer
        assert ctx.of_type(ActivateModel) == []
        assert "/rollback - back to the model" in await command(api, ADMIN, "/help")  # alive

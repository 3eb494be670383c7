"""``levibot models activate`` swaps the model of a running scoring actor over NATS."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from levibot.cli import main
from levibot.features import SCHEMA
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model
from levibot.runtime.node import Node
from levibot.settings import load_settings
from levibot.testenv import NATS_URL
from levibot.testing import eventually, write_config

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def registry_with_two_models(root: Path) -> tuple[str, str]:
    used = ("rsi_14", "bb_pctb")
    registry = ModelRegistry(root)
    ids = []
    for i, sign in enumerate((1.0, -1.0)):
        mid = f"m{i}-{uuid.uuid4().hex[:6]}"
        make_model(
            root / "incoming" / mid, model_id=mid, schema_hash=SCHEMA.hash,
            schema_size=len(SCHEMA.names), columns=tuple(SCHEMA.index(n) for n in used),
            names=used, sign=sign,
        )  # fmt: skip
        registry.register(root / "incoming" / mid)
        ids.append(mid)
    registry.activate(ids[0])
    return ids[0], ids[1]


async def test_cli_activation_reaches_the_running_scoring_actor(tmp_path: Path) -> None:
    first, second = registry_with_two_models(tmp_path / "models")
    ns = f"act{uuid.uuid4().hex[:8]}"
    sections = {
        "node": {"groups": ["scoring"], "http_port": -1},
        "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper()},
        "storage": {"data_dir": str(tmp_path)},
        "scoring": {"strategies": ["onnx"], "max_model_age_s": 0.0},
    }
    cfg = write_config(tmp_path / "c.toml", sections)
    node = Node(load_settings(cfg, environ={}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        scoring = node.actors["scoring"]
        assert scoring.health()["model_id"] == first
        code = await anyio.to_thread.run_sync(
            main, ["models", "--config", str(cfg), "activate", second]
        )
        assert code == 0
        await eventually(lambda: scoring.health()["model_id"] == second)
        node.stop()
    assert ModelRegistry(tmp_path / "models").active().model_id == second  # type: ignore[union-attr]

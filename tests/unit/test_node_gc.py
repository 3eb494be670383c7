"""``[node] gc_freeze``: a live node moves what starting made out of the collector's sight."""

from __future__ import annotations

import gc
from typing import Any

import anyio
import pytest

from levibot.runtime.node import EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testing import eventually
from tests.pipeline import chain_settings

pytestmark = pytest.mark.anyio


def settings(**node: Any) -> Any:
    return chain_settings(50, **node)


async def frozen_while_live(node: Node) -> int:
    """Run ``node`` through its chain; return how many objects were frozen while it was live."""

    async def run() -> None:
        await node.run(handle_signals=False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await eventually(lambda: len(getattr(node.actors["sink"], "seen", ())) == 50)
        frozen = gc.get_freeze_count()
        node.stop()
    return frozen


async def test_a_live_node_freezes_what_starting_made_and_unfreezes_when_it_stops() -> None:
    gc.unfreeze()
    node = Node(settings())
    frozen = await frozen_while_live(node)
    assert node.exit_code == EXIT_OK
    assert frozen > 1000  # modules, actors, config: the heap at start
    assert gc.get_freeze_count() == 0  # collectable again: no frozen cycle outlives the node


async def test_replay_and_gc_freeze_false_leave_the_collector_alone() -> None:
    gc.unfreeze()
    assert load_settings(None, environ={}).node.gc_freeze is True
    for node in (Node(settings(gc_freeze=False)), Node(settings(replay=True))):
        assert await frozen_while_live(node) == 0
        assert node.exit_code == EXIT_OK

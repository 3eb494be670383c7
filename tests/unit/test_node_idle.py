"""``[node] idle``: with "spin" the event loop never blocks while the node is live."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from levibot.runtime.node import EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testing import eventually
from tests.pipeline import chain_settings

pytestmark = pytest.mark.anyio


def settings(**node: Any) -> Any:
    return chain_settings(300, **node)


async def idle_window(node: Node, seconds: float) -> int:
    """Run ``node`` until its chain is done; return its idle passes over ``seconds`` of
    idleness after that."""

    async def run() -> None:
        await node.run(handle_signals=False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await eventually(lambda: len(getattr(node.actors["sink"], "seen", ())) == 300)
        before = node.idle_passes
        await anyio.sleep(seconds)
        passes = node.idle_passes - before
        node.stop()
    return passes


async def test_spin_keeps_the_loop_passing_while_idle_and_the_chain_still_flows() -> None:
    node = Node(settings(idle="spin"))
    t0 = time.monotonic()
    passes = await idle_window(node, 0.2)
    assert node.exit_code == EXIT_OK
    assert [m.value for m in node.actors["sink"].seen] == list(range(300))
    assert passes > 100, passes  # thousands on an idle core; a blocking loop makes 0
    assert time.monotonic() - t0 < 30


async def test_sleep_is_the_default_and_replay_never_spins() -> None:
    assert load_settings(None, environ={}).node.idle == "sleep"
    for node in (Node(settings()), Node(settings(idle="spin", replay=True))):
        passes = await idle_window(node, 0.05)
        assert passes == 0 and node.idle_passes == 0
        assert node.exit_code == EXIT_OK


def test_an_unknown_idle_strategy_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="idle"):
        load_settings(None, environ={}, overrides={"node": {"idle": "busy"}})

"""The runtime in one process: routing, readiness, drain cascade, supervision, partitions."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import anyio
import pytest

from levibot.bus import Delivery
from levibot.runtime import Partition
from levibot.runtime.node import EXIT_CRASH, EXIT_OK, Node, drain_order
from levibot.settings import load_settings
from levibot.testing import eventually
from tests.pipeline import GROUPS, Squared

pytestmark = pytest.mark.anyio


def settings(actors: tuple[str, ...] = ("counter", "square", "sink"), **sections: Any) -> Any:
    groups = {"all": actors, **GROUPS}
    node = {"groups": ["all"], "http_port": -1, "drain_timeout_s": 5.0, **sections.pop("node", {})}
    return load_settings(None, environ={}, overrides={"groups": groups, "node": node, **sections})


async def run_until_stopped(node: Node) -> int:
    code = -1

    async def run() -> None:
        nonlocal code
        code = await node.run(handle_signals=False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
    return code


async def test_every_message_flows_through_the_chain_in_order() -> None:
    node = Node(settings(node={"stop_when_sources_done": True}, counter={"count": 500}))
    assert await run_until_stopped(node) == EXIT_OK
    seen = node.actors["sink"].seen
    assert [m.value for m in seen] == list(range(500))
    assert all(m.square == m.value**2 for m in seen)


async def test_drain_cascade_handles_everything_published_before_stop() -> None:
    node = Node(settings(counter={"count": 10**9, "pace_every": 50}))
    source = node.actors["counter"]
    published = 0
    inner = source.ctx.publish

    async def counting(msg: Any) -> None:
        nonlocal published
        await inner(msg)
        published += 1

    source.ctx.publish = counting

    async def stop_midstream() -> None:
        await eventually(lambda: published >= 2_000)
        node.stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_midstream)
        assert await run_until_stopped(node) == EXIT_OK
    assert published >= 2_000
    assert len(node.actors["sink"].seen) == published  # nothing in flight was lost


async def test_readiness_waits_for_every_actor_and_metrics_are_exposed() -> None:
    node = Node(settings(node={"http_port": 0}, counter={"count": 10**9, "pace_every": 10}))
    assert not node.ready
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_until_stopped, node)
        await eventually(lambda: node.ready)
        await eventually(lambda: len(node.actors["sink"].seen) > 100)
        url = f"http://127.0.0.1:{node.http.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ready") as resp:
                assert resp.status == 200 and (await resp.json())["ready"] is True
            async with http.get(f"{url}/health") as resp:
                health = await resp.json()
                assert set(health["actors"]) == {"counter", "square", "sink"}
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
        node.stop()
    for family in (
        'levibot_mailbox_depth{actor="sink"}',
        'levibot_mailbox_dropped{actor="square"}',
        'levibot_actor_handled_total{actor="square"}',
        'levibot_actor_handle_seconds_bucket{actor="sink",le="1e-06"}',
        'levibot_actor_latency_seconds_count{actor="sink"}',
    ):
        assert family in text


async def test_skip_policy_drops_poison_messages_and_carries_on() -> None:
    node = Node(
        settings(node={"stop_when_sources_done": True}, counter={"count": 50},
                 square={"fail_on": [3, 17]})
    )  # fmt: skip
    assert await run_until_stopped(node) == EXIT_OK
    values = [m.value for m in node.actors["sink"].seen]
    assert values == [v for v in range(50) if v not in (3, 17)]
    assert node.metrics.value("levibot_actor_errors_total", actor="square") == 2


async def test_restart_policy_restarts_within_its_budget() -> None:
    node = Node(
        settings(("counter", "square", "crashy_sink"), node={"stop_when_sources_done": True},
                 counter={"count": 30}, crashy_sink={"fail_on": [5, 9]})
    )  # fmt: skip
    assert await run_until_stopped(node) == EXIT_OK
    assert node.metrics.value("levibot_actor_restarts_total", actor="crashy_sink") == 2
    # A restart is a fresh start (on_stop, on_start): state before it is gone, and the
    # message that failed is not retried.
    assert [m.value for m in node.actors["crashy_sink"].seen] == list(range(10, 30))


async def test_exhausted_restart_budget_stops_the_node_non_zero() -> None:
    node = Node(
        settings(("counter", "square", "crashy_sink"), counter={"count": 10**6, "pace_every": 5},
                 crashy_sink={"fail_on": [5, 9, 11]})
    )  # fmt: skip
    assert await run_until_stopped(node) == EXIT_CRASH


async def test_crash_policy_stops_the_node_non_zero() -> None:
    node = Node(
        settings(("counter", "square", "fatal_sink"), counter={"count": 10**6, "pace_every": 5},
                 fatal_sink={"fail_on": [7]})
    )  # fmt: skip
    assert await run_until_stopped(node) == EXIT_CRASH
    assert [m.value for m in node.actors["fatal_sink"].seen] == list(range(7))


async def test_a_partitioned_actor_sees_only_its_symbols() -> None:
    node = Node(
        settings(node={"stop_when_sources_done": True, "partition_index": 1,
                       "partition_count": 2},
                 counter={"count": 300, "symbols": ["AAA", "BBB", "CCC", "DDD"]})
    )  # fmt: skip
    assert await run_until_stopped(node) == EXIT_OK
    symbols = {m.symbol for m in node.actors["sink"].seen}
    owned = {s for s in ("AAA", "BBB", "CCC", "DDD") if Partition(1, 2).owns(s)}
    assert symbols == owned and 0 < len(owned) < 4


def test_partitions_split_symbols_disjointly_and_completely() -> None:
    symbols = [f"S{i}USDT" for i in range(200)]
    parts = [{s for s in symbols if Partition(i, 3).owns(s)} for i in range(3)]
    assert set().union(*parts) == set(symbols)
    assert sum(len(p) for p in parts) == len(symbols)
    assert all(len(p) > 30 for p in parts)


async def test_drain_order_is_upstream_first_even_with_a_cycle() -> None:
    node = Node(settings(("sink", "square", "counter")))
    order = [a.ctx.name for a in drain_order(list(node.actors.values()))]
    assert order == ["counter", "square", "sink"]


async def test_periodic_ticks_run_for_every_actor_that_asks_and_stop_with_the_node() -> None:
    node = Node(settings(("counter", "square", "ticker", "ticker2"),
                         counter={"count": 10**9, "pace_every": 10}))  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_until_stopped, node)
        await eventually(
            lambda: all(getattr(node.actors[n], "ticks", 0) > 3 for n in ("ticker", "ticker2"))
        )
        node.stop()
    assert node.exit_code == EXIT_OK


class RecordingDelivery(Delivery):
    """A transport delivery that records how it was settled."""

    settled: ClassVar[list[tuple[str, str | None]]] = []

    def settle(self) -> None:
        self.settled.append((self.key, repr(self.error) if self.error else None))


async def deliver_durable(node: Node, *values: int, attempt: int = 1) -> None:
    for v in values:
        msg = Squared(ts_event=v, ts_init=v, symbol="AAA", value=v, square=v * v)
        await node.bus.deliver_remote(msg, RecordingDelivery(f"sq:{v}", attempt))


async def test_a_failed_durable_delivery_is_reported_and_the_crash_policy_actor_goes_on() -> None:
    RecordingDelivery.settled.clear()
    node = Node(settings(("fatal_sink",), fatal_sink={"fail_on": [2]}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_until_stopped, node)
        await eventually(lambda: node.ready)
        await deliver_durable(node, 1, 2, 3)
        await deliver_durable(node, 2, attempt=2)  # the transport redelivers it: same key
        await eventually(lambda: len(RecordingDelivery.settled) == 4)
        node.stop()
    assert node.exit_code == EXIT_OK
    assert [m.value for m in node.actors["fatal_sink"].seen] == [1, 3]
    assert RecordingDelivery.settled == [
        ("sq:1", None),
        ("sq:2", "RuntimeError('sink refuses 2')"),
        ("sq:3", None),
        ("sq:2", "RuntimeError('sink refuses 2')"),
    ]
    assert node.metrics.value("levibot_actor_durable_failures_total", actor="fatal_sink") == 2


async def test_distinct_failing_durable_messages_past_the_budget_stop_the_node() -> None:
    RecordingDelivery.settled.clear()
    node = Node(settings(("fatal_sink",), fatal_sink={"fail_on": list(range(10))}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_until_stopped, node)
        await eventually(lambda: node.ready)
        await deliver_durable(node, *range(10))
    assert node.exit_code == EXIT_CRASH  # budget 5 in 60 s: the sixth distinct failure
    failed = [k for k, e in RecordingDelivery.settled if e is not None]
    assert failed == [f"sq:{v}" for v in range(6)]  # each reported for redelivery first


async def test_restart_policy_restarts_on_a_failed_durable_delivery_and_reports_it() -> None:
    RecordingDelivery.settled.clear()
    node = Node(settings(("crashy_sink",), crashy_sink={"fail_on": [2]}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_until_stopped, node)
        await eventually(lambda: node.ready)
        await deliver_durable(node, 1, 2, 3)
        await eventually(lambda: len(RecordingDelivery.settled) == 3)
        node.stop()
    assert node.exit_code == EXIT_OK
    assert node.metrics.value("levibot_actor_restarts_total", actor="crashy_sink") == 1
    assert [e is None for _, e in RecordingDelivery.settled] == [True, False, True]


async def test_a_delivery_with_several_local_handlers_settles_once_after_all_reported() -> None:
    RecordingDelivery.settled.clear()
    node = Node(settings(("sink", "fatal_sink"), fatal_sink={"fail_on": [5]}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_until_stopped, node)
        await eventually(lambda: node.ready)
        await deliver_durable(node, 4, 5)
        await eventually(lambda: len(RecordingDelivery.settled) == 2)
        node.stop()
    # sink handled 5, fatal_sink refused it: one failure, settled when both had reported
    assert [m.value for m in node.actors["sink"].seen] == [4, 5]
    assert RecordingDelivery.settled == [("sq:4", None), ("sq:5", "RuntimeError('sink refuses 5')")]


async def test_a_port_in_use_fails_the_start_with_one_line_and_exit_73() -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        node = Node(settings(node={"http_port": port}, counter={"count": 10}))
        assert await run_until_stopped(node) == 73
    assert not node.ready and not any(r.started for r in node.runners)
    assert str(node.failure) == (
        f"cannot listen on 127.0.0.1:{port}: address already in use ([node] http_port)"
    )


async def test_an_actor_failing_to_start_is_named_and_the_others_are_stopped() -> None:
    node = Node(settings(sink={"path": "/nonexistent-dir/out"}))
    code = await run_until_stopped(node)
    assert node.failure is not None and code == node.failure.exit_code
    assert str(node.failure).endswith("([sink] path)"), str(node.failure)
    assert not any(r.started for r in node.runners)

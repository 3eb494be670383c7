"""Poison durable messages over a real NATS: retried, dead-lettered once, ``levibot dlq``.

The sink here has the crash policy of risk and order. A message it raises on is redelivered up
to ``max_deliver`` times, lands in the dead-letter stream once with its error, raises an alert,
and the node goes on with the next messages instead of exiting (and being restarted into the
same message, forever).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import nats
import pytest

from levibot.bus import _dlq
from levibot.cli import main as cli
from levibot.messages import Alert, Codec
from levibot.runtime.node import EXIT_CRASH, EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testenv import NATS_URL
from levibot.testing import eventually, write_config
from tests.pipeline import Squared

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

URL = NATS_URL
MAX_DELIVER = 3


def nats_section(ns: str) -> dict[str, Any]:
    return {
        "url": URL, "namespace": ns, "stream": ns.upper(), "ack_wait_s": 5.0,
        "max_deliver": MAX_DELIVER, "redeliver_delay_s": 0.05,
    }  # fmt: skip


def node_for(ns: str, fail_on: list[int], tmp_path: Path) -> Node:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["tests.pipeline"], "groups": ["out"], "http_port": -1},
            "groups": {"out": ["fatal_sink"]},
            "fatal_sink": {"fail_on": fail_on},
            "nats": nats_section(ns),
            "storage": {"data_dir": str(tmp_path / "var")},
        },
    )
    return Node(settings)


def squared(value: int) -> Squared:
    return Squared(ts_event=value, ts_init=value, symbol="AAA", value=value, square=value**2)


async def publish(js: Any, ns: str, *values: int) -> None:
    for v in values:
        msg = squared(v)
        await js.publish(
            f"{ns}.{msg.subject()}",
            Codec([Squared]).encode(msg),
            headers={"Nats-Msg-Id": msg.dedup_id(), "Lb-Origin": "test"},
        )


async def cli_json(cfg: Path, *args: str, capsys: Any) -> list[Any]:
    """Run ``levibot dlq ...`` (its own event loop, in a thread) and parse its JSON lines."""
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(cli, ["dlq", "--config", str(cfg), *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_a_poison_message_is_dead_lettered_once_and_the_node_goes_on(
    tmp_path: Path, capsys: Any
) -> None:
    ns = f"dlq{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "cli.toml", {"nats": nats_section(ns)})
    node = node_for(ns, [4], tmp_path)
    nc = await nats.connect(URL)
    js = nc.jetstream()
    alerts: list[Alert] = []
    codec = Codec([Alert])

    async def on_alert(raw: Any) -> None:
        alerts.append(codec.decode(raw.data))  # type: ignore[arg-type]

    await nc.subscribe(f"{ns}.lb.alert.>", cb=on_alert)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        sink = node.actors["fatal_sink"]
        await publish(js, ns, *range(1, 10))
        await eventually(lambda: len(sink.seen) == 8)
        dead = await eventually(lambda: node.metrics.value("levibot_nats_dead_lettered_total"))
        assert dead == 1
        # The server has nothing left to deliver and nothing unacked: it is settled, not lost.
        consumer = (await js.consumers_info(ns.upper()))[0].name
        with anyio.fail_after(10):
            while (info := await js.consumer_info(ns.upper(), consumer)).num_ack_pending:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert info.num_pending == 0
        assert [m.value for m in sink.seen] == [1, 2, 3, 5, 6, 7, 8, 9]
        assert node.ready and node.exit_code == EXIT_OK
        assert (
            node.metrics.value("levibot_actor_durable_failures_total", actor="fatal_sink")
            == MAX_DELIVER
        )
        await eventually(lambda: alerts)
        assert alerts[0].code == "DEAD_LETTER" and "sink refuses 4" in alerts[0].text

        [row] = await cli_json(cfg, "list", "--json", capsys=capsys)
        assert row["deliveries"] == MAX_DELIVER and row["actor"] == "fatal_sink"
        assert row["error"] == "RuntimeError: sink refuses 4"
        assert row["subject"] == f"{ns}.lbtest.sq.AAA" and row["msg_id"] == "sq:AAA:4"
        assert row["headers"]["Lb-Origin"] == "test"
        [shown] = await cli_json(cfg, "show", str(row["seq"]), "--json", capsys=capsys)
        assert shown["message"]["value"] == 4 and shown["consumer"] == consumer

        # The bug is fixed (here: the sink stops refusing), the operator replays: handled once.
        sink.config = msgspec.structs.replace(sink.config, fail_on=())
        await anyio.to_thread.run_sync(cli, ["dlq", "--config", str(cfg), "replay", "--all"])
        await eventually(lambda: [m.value for m in sink.seen][-1:] == [4])
        assert await cli_json(cfg, "list", "--json", capsys=capsys) == []
        node.stop()
    assert node.exit_code == EXIT_OK
    assert [m.value for m in sink.seen].count(4) == 1
    await nc.close()


async def test_purge_empties_only_this_namespace(tmp_path: Path, capsys: Any) -> None:
    ns = f"dlq{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "cli.toml", {"nats": nats_section(ns)})
    node = node_for(ns, [1, 2], tmp_path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        nc = await nats.connect(URL)
        await publish(nc.jetstream(), ns, 1, 2, 3)
        await eventually(lambda: node.metrics.value("levibot_nats_dead_lettered_total") == 2)
        listed = await cli_json(cfg, "list", "--json", capsys=capsys)
        assert sorted(r["msg_id"] for r in listed) == ["sq:AAA:1", "sq:AAA:2"]
        capsys.readouterr()
        assert await anyio.to_thread.run_sync(cli, ["dlq", "--config", str(cfg), "purge"]) == 0
        assert "purged 2" in capsys.readouterr().out
        assert await cli_json(cfg, "list", "--json", capsys=capsys) == []
        assert await _dlq.letters(nc.jetstream(), load_settings(cfg).nats) == []
        await nc.close()
        node.stop()
    assert node.exit_code == EXIT_OK


async def test_an_actor_that_fails_on_every_message_still_exhausts_its_budget(
    tmp_path: Path,
) -> None:
    ns = f"dlq{uuid.uuid4().hex[:8]}"
    node = node_for(ns, list(range(100)), tmp_path)  # broken: every message raises
    code = -1

    async def run() -> None:
        nonlocal code
        code = await node.run(handle_signals=False)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await eventually(lambda: node.ready)
        nc = await nats.connect(URL)
        await publish(nc.jetstream(), ns, *range(10))
        await nc.close()
    # Budget 5 distinct failing messages per minute: the sixth ends the node non-zero.
    assert code == EXIT_CRASH


async def test_a_slow_handler_outliving_ack_wait_handles_the_message_once(tmp_path: Path) -> None:
    ns = f"dlq{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["tests.pipeline"], "groups": ["out"], "http_port": -1},
            "groups": {"out": ["sink"]},
            "sink": {"delay_s": 2.5},  # longer than two ack_waits
            "nats": {**nats_section(ns), "ack_wait_s": 1.0, "max_deliver": 1},
            "storage": {"data_dir": str(tmp_path / "var")},
        },
    )
    node = Node(settings)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        async with await nats.connect(URL) as nc:
            js = nc.jetstream()
            await publish(js, ns, 1)
            await eventually(lambda: node.actors["sink"].seen, timeout=15)
            consumer = (await js.consumers_info(ns.upper()))[0].name
            with anyio.fail_after(10):
                while (await js.consumer_info(ns.upper(), consumer)).num_ack_pending:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert await _dlq.letters(js, settings.nats) == []
        node.stop()
    assert [m.value for m in node.actors["sink"].seen] == [1]  # not once per redelivery
    assert node.metrics.value("levibot_nats_redelivered_inflight_total") >= 1
    assert node.metrics.value("levibot_nats_dead_lettered_total") == 0

"""A durable stream that refuses publishes: market data keeps flowing, the refused messages are
spilled to disk within their retry budget (with an alert), and re-sent at the next start.

A private nats-server (the stream's limits are changed under the node); the stream refuses by
``max_msgs`` with ``discard=new``, the way a full stream does in production.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.js import api

from levibot.bus import _spill
from levibot.bus._frame import FrameDecoder
from levibot.messages import Alert, Codec, Tick
from levibot.runtime.node import EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testing import NatsServer, eventually
from tests.pipeline import Squared

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BUDGET_S = 3.0


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = NatsServer(tmp_path / "js")
    srv.start()
    yield srv
    srv.stop()


def squared(v: int) -> Squared:
    return Squared(ts_event=v, ts_init=v, symbol="AAA", value=v, square=v * v)


def tick(i: int) -> Tick:
    now = time.time_ns()
    return Tick(ts_event=now, ts_init=now, symbol="BTCUSDT", venue="x", price=1.0 + i, size=1.0)


async def run_node(settings: Any, body: Any) -> int:
    node = Node(settings)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        await body(node)
        node.stop()
    return node.exit_code


async def stored(js: Any, stream: str, subject: str) -> int:
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_a_refusing_stream_spills_durable_messages_and_never_stalls_market_data(
    server: NatsServer, tmp_path: Path
) -> None:
    ns = f"sp{uuid.uuid4().hex[:8]}"
    stream = ns.upper()
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["tests.pipeline"], "groups": ["out"], "http_port": -1},
            "groups": {"out": ["sink"]},
            "nats": {
                "url": server.url,
                "namespace": ns,
                "stream": stream,
                "connect_timeout_s": 0.5,
                "publish_retry_s": BUDGET_S,
                "mirror": "all",  # the ticks, which no actor consumes, for this test's client
            },
            "storage": {"data_dir": str(tmp_path / "var")},
        },
    )
    async with await nats.connect(server.url) as nc:
        await scenario(nc, nc.jetstream(), settings, ns)


async def scenario(nc: Any, js: Any, settings: Any, ns: str) -> None:
    stream = ns.upper()
    ticks: list[bytes] = []
    alerts: list[Alert] = []
    codec = Codec([Alert])
    frames = FrameDecoder(Codec([Tick]))

    async def on_tick(raw: Any) -> None:
        # Core NATS carries frames: one NATS message holds each run of ticks queued together.
        ticks.extend([raw.data] * len(frames.decode(raw.data)[3]))

    async def on_alert(raw: Any) -> None:
        alerts.append(codec.decode(raw.data))  # type: ignore[arg-type]

    await nc.subscribe(f"{ns}.lb.md.tick.>", cb=on_tick)
    await nc.subscribe(f"{ns}.lb.alert.>", cb=on_alert)
    sq = f"{ns}.lbtest.sq.>"
    spilled_during_ticks = -1.0
    spill_file: Path | None = None

    async def refuse_then_publish(node: Node) -> None:
        nonlocal spilled_during_ticks, spill_file
        assert node.mirror is not None
        spill_file = node.mirror.spill_path
        await node.bus.publish(squared(0))
        await eventually(lambda: node.metrics.value("levibot_nats_published_total") >= 1)
        info = await js.stream_info(stream)
        info.config.max_msgs = info.state.messages  # full: every further publish is refused
        info.config.discard = api.DiscardPolicy.NEW
        await js.update_stream(info.config)
        for v in range(1, 21):
            await node.bus.publish(squared(v))  # stuck behind the refusing stream...
        for i in range(100):
            await node.bus.publish(tick(i))  # ...while market data goes straight out
            await anyio.sleep(0.002)
        await eventually(lambda: len(ticks) == 100)
        spilled_during_ticks = node.metrics.value("levibot_nats_spilled_total")
        await eventually(lambda: node.metrics.value("levibot_nats_spilled_total") == 20)
        for v in range(21, 26):  # still refusing: spilled at the first refusal, not the budget
            await node.bus.publish(squared(v))
        await eventually(lambda: node.metrics.value("levibot_nats_spilled_total") == 25)
        await eventually(lambda: alerts)

    assert await run_node(settings, refuse_then_publish) == EXIT_OK
    assert spilled_during_ticks == 0  # the ticks all went out while the durable batch was stuck
    assert [a.code for a in alerts] == ["NATS_SPILL"]  # one alert for the spell, not per batch
    assert spill_file is not None
    entries = _spill.read(spill_file)
    assert [e.headers["Nats-Msg-Id"] for e in entries] == [f"sq:AAA:{v}" for v in range(1, 26)]
    assert "maximum messages" in entries[0].error
    assert await stored(js, stream, sq) == 1

    # The operator makes room; the next start of the node re-sends the spill, in order.
    info = await js.stream_info(stream)
    info.config.max_msgs = -1
    await js.update_stream(info.config)

    async def nothing(node: Node) -> None:
        await eventually(lambda: node.metrics.value("levibot_nats_published_total") >= 25)

    assert await run_node(settings, nothing) == EXIT_OK
    assert await stored(js, stream, sq) == 26
    assert _spill.pending(spill_file) == []
    last = await js.get_msg(stream, subject=sq)  # last by subject: the order was kept
    assert last.headers["Nats-Msg-Id"] == "sq:AAA:25"

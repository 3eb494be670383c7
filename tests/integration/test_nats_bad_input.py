"""Garbage from NATS is counted and logged, never crashes an actor, never redelivered forever."""

from __future__ import annotations

import uuid

import anyio
import msgspec
import nats
import pytest

from levibot.runtime.node import Node
from levibot.settings import load_settings
from levibot.testenv import NATS_URL
from levibot.testing import eventually
from tests.pipeline import Num

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_malformed_and_unknown_messages_are_counted_and_skipped() -> None:
    ns = f"bad{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["tests.pipeline"], "groups": ["work"], "http_port": -1},
            "groups": {"work": ["square", "sink"]},
            "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper()},
        },
    )
    node = Node(settings)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        good = Num(ts_event=1, ts_init=1, symbol="AAA", value=7)
        await nc.publish(f"{ns}.lbtest.num.AAA", b"\xc1garbage")
        await nc.publish(f"{ns}.lbtest.num.AAA", msgspec.msgpack.encode({"type": "levibot.Nope"}))
        await nc.publish(
            f"{ns}.lbtest.num.AAA", msgspec.msgpack.encode({"type": "Num", "value": "x"})
        )
        await js.publish(f"{ns}.lbtest.job.all", b"not msgpack", headers={"Nats-Msg-Id": "junk-1"})
        await nc.publish(f"{ns}.lbtest.num.AAA", msgspec.msgpack.encode(good))
        await eventually(lambda: len(node.actors["sink"].seen) == 1)
        await eventually(lambda: node.metrics.value("levibot_nats_ingress_bad_total") == 4)
        assert node.actors["sink"].seen[0].value == 7
        consumer = next(
            c
            for c in await js.consumers_info(ns.upper())
            if c.config.filter_subject.endswith("job.>")
        )
        with anyio.fail_after(10):  # the garbage is acked (terminal), never redelivered
            # polling the server's view: there is no event to wait on
            while (info := await js.consumer_info(ns.upper(), consumer.name)).num_ack_pending:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert info.num_redelivered == 0 and info.num_pending == 0
        await nc.close()
        node.stop()
    assert node.exit_code == 0

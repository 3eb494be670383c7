"""A poison order through the real risk actor in a ``levibot run`` process over a real NATS.

Before: risk (crash policy) raised, the node exited 70, was restarted into the same redelivered
message, and exited 70 again, forever. Now the message is tried ``max_deliver`` times, lands in
the dead-letter stream once, and the next order is decided and filled by the same process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from levibot.bus import _dlq
from levibot.messages import CORE_TYPES, Bar, Codec, Fill, Message, OrderIntent, SubmitOrder
from levibot.settings import load_settings
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, http_ok, write_config
from tests.dlq_actors import POISON

pytestmark = [pytest.mark.integration, pytest.mark.slow]

URL = NATS_URL
CODEC = Codec(CORE_TYPES)


def order(symbol: str, qty: float) -> SubmitOrder:
    now = time.time_ns()
    return SubmitOrder(
        ts_event=now, ts_init=now, command_id=uuid.uuid4().hex, issued_by="test",
        symbol=symbol, side="buy", quantity=qty,
    )  # fmt: skip


def bar(close: float) -> Bar:
    now = time.time_ns()
    return Bar(
        ts_event=now, ts_init=now, symbol="BTCUSDT", venue="binance", timeframe="1m",
        start=now, open=close, high=close, low=close, close=close, volume=1.0,
    )  # fmt: skip


async def scenario(ns: str, cfg: Path) -> dict[str, Any]:
    nc = await nats.connect(URL)
    js = nc.jetstream()
    seen: list[Message] = []
    filled = anyio.Event()
    poison, good = order(POISON, 0.005), order("BTCUSDT", 0.005)
    coid = f"manual-{good.command_id}"

    async def on_order(raw: Any) -> None:
        msg = CODEC.decode(raw.data)
        seen.append(msg)
        if isinstance(msg, Fill) and msg.client_order_id == coid:
            filled.set()

    await nc.subscribe(f"{ns}.lb.order.>", cb=on_order)

    async def send(cmd: SubmitOrder) -> None:
        await js.publish(
            f"{ns}.{cmd.subject()}", CODEC.encode(cmd),
            headers={"Nats-Msg-Id": cmd.dedup_id(), "Lb-Origin": "test"},
        )  # fmt: skip

    async with anyio.create_task_group() as tg:

        async def market() -> None:  # the market price for risk, the next bar to fill at
            while True:
                b = bar(40_000.0)
                await nc.publish(f"{ns}.{b.subject()}", CODEC.encode(b))
                await anyio.sleep(0.05)

        tg.start_soon(market)
        await anyio.sleep(0.3)
        await send(poison)
        await send(good)
        with anyio.fail_after(20):
            await filled.wait()
            dead: list[_dlq.DeadLetter] = []
            while not dead:
                dead = await _dlq.letters(js, load_settings(cfg).nats)
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    await nc.close()
    return {"seen": seen, "dead": dead, "coid": coid, "poison": poison}


def test_a_poison_order_is_dead_lettered_and_the_next_order_fills(tmp_path: Path) -> None:
    ns = f"rp{uuid.uuid4().hex[:8]}"
    nats_cfg = {
        "url": URL, "namespace": ns, "stream": ns.upper(), "max_deliver": 3,
        "redeliver_delay_s": 0.05,
    }  # fmt: skip
    cfg = write_config(
        tmp_path / "exec.toml",
        {
            "node": {"plugins": ["tests.dlq_actors"]},
            "groups": {"exec": ["poison_risk", "order"]},
            "nats": nats_cfg,
            "storage": {"data_dir": str(tmp_path / "var")},
        },
    )
    node = NodeProcess(cfg, "--groups", "exec", log=tmp_path / "exec.log")
    try:
        node.wait_ready()
        out = anyio.run(scenario, ns, cfg)
        assert node.proc.poll() is None and http_ok(node.port), node.tail()  # no crash, ready
        intents = [m for m in out["seen"] if isinstance(m, OrderIntent)]
        assert [i.client_order_id for i in intents] == [out["coid"]]  # the poison decided nothing
        [dead] = out["dead"]
        assert dead.deliveries == 3 and dead.actor == "poison_risk"
        assert dead.error == f"ValueError: poison order {out['poison'].command_id}"
        assert CODEC.decode(dead.data) == out["poison"]
        listed = subprocess.run(
            [sys.executable, "-m", "levibot", "dlq", "--config", str(cfg), "list", "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        [row] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["seq"] == dead.seq and row["subject"] == f"{ns}.lb.ctl.risk"
    finally:
        node.signal(signal.SIGTERM)
        code = node.wait(30)
    assert code == 0, node.tail()
    log = node.tail(100_000)
    assert log.count('"event": "nats.dead_lettered"') == 1
    assert '"event": "node.fatal"' not in log

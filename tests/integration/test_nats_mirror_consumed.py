"""``[nats] mirror``: a node sends a core type to NATS only when an actor elsewhere consumes it.

The deployment: group ``a`` (a producer of ``Here`` and ``There``, a consumer of ``Here`` that
emits the durable ``Kept``) and group ``b`` (a consumer of ``There``). The node runs ``a``
alone, on the shared NATS server, and a raw nats-py client subscribed to the whole namespace
records what arrives.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import anyio
import nats
import pytest

from levibot.bus._frame import FrameDecoder
from levibot.config import Config
from levibot.messages import Codec, Message
from levibot.registry import register
from levibot.runtime import Actor
from levibot.runtime.node import EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testenv import NATS_URL
from levibot.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Here(Message, frozen=True, kw_only=True):
    """Core; consumed only by group a, which the node runs."""

    symbol: str
    subject_root: ClassVar[str] = "lbmir.here"

    def subject(self) -> str:
        return f"lbmir.here.{self.symbol}"


class There(Message, frozen=True, kw_only=True):
    """Core; consumed by group b, which runs elsewhere."""

    symbol: str
    subject_root: ClassVar[str] = "lbmir.there"

    def subject(self) -> str:
        return f"lbmir.there.{self.symbol}"


class Kept(Message, frozen=True, kw_only=True):
    """Durable, consumed by nobody: it goes to the stream all the same."""

    n: int
    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lbmir.kept"

    def dedup_id(self) -> str:
        return f"kept:{self.n}"


class Producer(Actor[Config]):
    """Declares what the test publishes on the node's bus: the node decides for these types."""

    name = "mir_producer"
    emits = (Here, There)


class HereSink(Actor[Config]):
    """Consumes Here (its handle, the base one, keeps nothing)."""

    name = "mir_here"
    consumes = (Here,)
    emits = (Kept,)


class PartitionedHereSink(HereSink):
    name = "mir_here_p"
    partitioned = True


class ThereSink(Actor[Config]):
    """Consumes There (its handle, the base one, keeps nothing)."""

    name = "mir_there"
    consumes = (There,)


for _cls in (Producer, HereSink, PartitionedHereSink, ThereSink):
    register(_cls.name, f"{__name__}:{_cls.__name__}")


def settings(a: str = "mir_here", **nats_: Any) -> Any:
    ns = f"mir{uuid.uuid4().hex[:8]}"
    node = {"groups": ["a"], "http_port": -1, "partition_count": 2 if a == "mir_here_p" else 1}
    return load_settings(
        None,
        environ={},
        overrides={
            "node": node,
            "groups": {"a": ["mir_producer", a], "b": ["mir_there"]},
            "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper(), **nats_},
        },
    )


async def arrivals(settings: Any) -> list[str]:
    """Run the node, publish Here, Kept, then There on its bus; return the names of the types
    that reached NATS, sorted. There goes last, once Kept is in: a Here sent went out before it
    on the same connection, so it is in by then."""
    ns = settings.nats.namespace
    frames = FrameDecoder(Codec([Here, There]))
    codec = Codec([Kept])
    seen: list[str] = []

    async def record(raw: Any) -> None:
        if raw.subject.startswith(f"{ns}.lbmir.kept"):
            seen.append(type(codec.decode(raw.data)).__name__)
        elif raw.subject.startswith(f"{ns}.lbmir."):
            seen.extend(type(m).__name__ for m in frames.decode(raw.data)[3])

    nc = await nats.connect(NATS_URL)
    await nc.subscribe(f"{ns}.>", cb=record)
    await nc.flush()
    node = Node(settings)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: node.run(handle_signals=False))
            await eventually(lambda: node.ready)
            assert node.mirror is not None
            await node.bus.publish(Here(ts_event=1, ts_init=1, symbol="AAA"))
            await node.bus.publish(Kept(ts_event=2, ts_init=2, n=2))
            await eventually(lambda: "Kept" in seen)  # durable: its own egress task
            await node.bus.publish(There(ts_event=3, ts_init=3, symbol="AAA"))
            await eventually(lambda: "There" in seen)
            node.stop()
    finally:
        await nc.drain()
    assert node.exit_code == EXIT_OK
    assert seen[-1] == "There", seen
    return sorted(seen)


async def test_a_core_type_consumed_elsewhere_goes_out_one_consumed_only_here_does_not() -> None:
    assert await arrivals(settings()) == ["Kept", "There"]


async def test_mirror_all_sends_every_core_type() -> None:
    assert await arrivals(settings(mirror="all")) == ["Here", "Kept", "There"]


async def test_a_partitioned_consumer_with_other_replicas_gets_what_this_one_publishes() -> None:
    assert await arrivals(settings("mir_here_p")) == ["Here", "Kept", "There"]

"""Durable egress's JetStream publisher against a real nats-server: every outcome ``js.publish``
reports (stored, deduplicated, no stream, refused, no ack in time, not sent) is reported the
same way, per message of a batch, and a late ack never lands on a later batch. Each on both of
the connections it publishes on: nats-py's, and the core link's (``[nats] core_link``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from levibot.bus._jspub import JetStreamPublisher
from levibot.bus._link import CoreLink, LinkDown
from levibot.testenv import NATS_URL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def nc() -> AsyncIterator[Any]:
    conn = await nats.connect(NATS_URL)
    yield conn
    await conn.close()


@pytest.fixture(params=["nats-py", "link"])
async def client(request: Any, nc: Any) -> AsyncIterator[Any]:
    """The connection the publisher publishes on (``nc`` stays nats-py, for the stream's API)."""
    if request.param == "nats-py":
        yield nc
        return
    link = await CoreLink(NATS_URL).connect()
    yield link
    await link.close()


@pytest.fixture
async def stream(nc: Any) -> AsyncIterator[str]:
    """A fresh stream on ``<name>.>``; its name is also its subjects' root."""
    name = f"JSPUB{uuid.uuid4().hex[:8].upper()}"
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"], storage=api.StorageType.MEMORY)
    yield name
    await js.delete_stream(name)


def item(subject: str, n: int, msg_id: str | None = None) -> tuple[str, bytes, dict[str, str]]:
    return subject, f"m{n}".encode(), {"Nats-Msg-Id": msg_id or f"{subject}:{n}"}


async def stored(nc: Any, stream: str) -> list[bytes]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    first, count = info.state.first_seq, info.state.messages
    return [(await js.get_msg(stream, seq)).data for seq in range(first, first + count)]


async def test_a_batch_is_stored_in_order_and_a_repeated_msg_id_is_stored_once(
    nc: Any, client: Any, stream: str
) -> None:
    pub = JetStreamPublisher(client)
    batch = [item(f"{stream}.a", n) for n in range(20)]
    assert await pub.publish(batch, 2.0) == [None] * 20
    # A retry of what was stored (its ack lost): accepted, deduplicated by Nats-Msg-Id.
    assert await pub.publish(batch[:5], 2.0) == [None] * 5
    assert await stored(nc, stream) == [f"m{n}".encode() for n in range(20)]


async def test_a_subject_no_stream_listens_on_is_reported_per_message(
    nc: Any, client: Any, stream: str
) -> None:
    pub = JetStreamPublisher(client)
    results = await pub.publish([item(f"{stream}.a", 1), item("nostream.x", 2)], 2.0)
    assert results[0] is None
    assert isinstance(results[1], nats.js.errors.NoStreamResponseError)


async def test_a_full_stream_refuses_what_does_not_fit_with_its_error(
    nc: Any, client: Any, stream: str
) -> None:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    info.config.max_msgs = 2
    info.config.discard = api.DiscardPolicy.NEW
    await js.update_stream(info.config)
    pub = JetStreamPublisher(client)
    results = await pub.publish([item(f"{stream}.a", n) for n in range(3)], 2.0)
    assert results[:2] == [None, None]
    assert isinstance(results[2], nats.js.errors.APIError)
    assert "maximum messages" in str(results[2])
    assert await stored(nc, stream) == [b"m0", b"m1"]


async def test_no_ack_in_time_is_a_timeout_and_a_late_ack_is_dropped(
    nc: Any, client: Any, stream: str
) -> None:
    # A responder that answers slowly on a subject no stream holds: its "ack" comes too late.
    slow = f"slow{uuid.uuid4().hex[:8]}"
    replied = asyncio.Event()

    async def answer_late(msg: Any) -> None:
        await asyncio.sleep(0.3)
        await nc.publish(msg.reply, b'{"stream":"X","seq":1}')
        replied.set()

    await nc.subscribe(slow, cb=answer_late)
    await nc.flush()
    pub = JetStreamPublisher(client)
    results = await pub.publish([item(f"{stream}.a", 1), item(slow, 2)], 0.1)
    assert results[0] is None
    assert isinstance(results[1], nats.errors.TimeoutError)
    # The next batch is in flight when the late ack arrives; it must wait for its own.
    next_batch = [item(f"{stream}.a", n) for n in range(2, 5)]
    results, _ = await asyncio.gather(pub.publish(next_batch, 2.0), replied.wait())
    assert results == [None] * 3
    assert pub._waiting == {}  # nothing left behind
    assert await stored(nc, stream) == [b"m1", b"m2", b"m3", b"m4"]


@pytest.mark.parametrize("kind", ["nats-py", "link"])
async def test_a_closed_connection_fails_every_message_at_once(stream: str, kind: str) -> None:
    conn: Any = await (
        nats.connect(NATS_URL) if kind == "nats-py" else CoreLink(NATS_URL).connect()
    )
    pub = JetStreamPublisher(conn)
    assert await pub.publish([item(f"{stream}.a", 0)], 2.0) == [None]
    await conn.close()
    results = await asyncio.wait_for(
        pub.publish([item(f"{stream}.a", n) for n in (1, 2)], 5.0), 1.0
    )
    closed = nats.errors.ConnectionClosedError if kind == "nats-py" else LinkDown
    assert all(isinstance(r, closed) for r in results)
    assert pub._waiting == {}


class Flushing:
    """The real client, each PUB followed by a wait, as a PUB that fills nats-py's pending
    buffer waits for its flush: the acks of the PUBs before it come back meanwhile."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.nc, name)

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await self.nc.publish(*args, **kwargs)
        await asyncio.sleep(0.1)


async def test_a_batch_is_not_complete_while_its_last_pubs_are_still_going_out(
    nc: Any, stream: str
) -> None:
    silent = f"silent{uuid.uuid4().hex[:8]}"  # a responder that never answers: no 503 either

    async def never_answer(msg: Any) -> None:
        """Take the request; never reply."""

    await nc.subscribe(silent, cb=never_answer)
    await nc.flush()
    pub = JetStreamPublisher(Flushing(nc))
    results = await pub.publish([item(f"{stream}.a", 1), item(silent, 2)], 0.3)
    assert results[0] is None  # its ack came back while the second PUB was flushing
    assert isinstance(results[1], nats.errors.TimeoutError)  # not taken for stored

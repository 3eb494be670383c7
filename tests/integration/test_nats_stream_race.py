"""Nodes starting at once against a fresh NATS all create (or extend) the JetStream stream."""

from __future__ import annotations

import uuid

import anyio
import nats
import pytest

from levibot.bus._subjects import ensure_stream, minimal, namespace, patterns
from levibot.messages import Bar, Features, Fill, OrderIntent, PortfolioSnapshot, Signal, Tick
from levibot.settings import NatsConfig
from levibot.testenv import NATS_URL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: Each node's types (as pods of different groups): their durable subjects are the same, and
#: they race to create the stream. With durable_all their core types differ, which the stream's
#: subjects must not (JetStream has no compare-and-set: an update from an older read wins).
NODES = [(Tick,), (Bar,), (Features,), (Signal,), (OrderIntent,), (Fill,), (PortfolioSnapshot,),
         (Tick, Fill)]  # fmt: skip


async def test_nodes_creating_one_stream_at_once_all_start_and_it_carries_every_subject() -> None:
    ns = f"race{uuid.uuid4().hex[:8]}"
    config = NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper())
    conns = [await nats.connect(NATS_URL) for _ in NODES]
    errors: list[BaseException] = []
    try:

        async def start(nc: nats.NATS, types: tuple[type, ...]) -> None:
            try:
                await ensure_stream(nc.jetstream(), config, types)
            except Exception as exc:  # before: "subjects overlap with an existing stream"
                errors.append(exc)

        for _ in range(3):  # three fresh races
            async with anyio.create_task_group() as tg:
                for nc, types in zip(conns, NODES, strict=True):
                    tg.start_soon(start, nc, types)
            assert not errors, errors[0]
            info = await conns[0].jetstream().stream_info(config.stream)
            durable = [p for t in NODES for p, d in patterns(t, False).items() if d]
            union = {namespace(config) + p for p in durable}
            have = set(info.config.subjects or ())
            assert set(minimal(have | union)) == have  # every node's subjects are covered
            await conns[0].jetstream().delete_stream(config.stream)
    finally:
        for nc in conns:
            await nc.close()


async def test_durable_all_nodes_of_different_types_never_remove_each_others_subjects() -> None:
    ns = f"raceall{uuid.uuid4().hex[:8]}"
    config = NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper(), durable_all=True)
    narrow = NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper())
    conns = [await nats.connect(NATS_URL) for _ in NODES]
    js = conns[0].jetstream()
    union = {namespace(config) + p for t in NODES for p in patterns(t, True)}
    try:
        for round_ in range(6):
            if round_ % 2:  # a stream made without durable_all: every node must update it
                await ensure_stream(js, narrow, ())
            async with anyio.create_task_group() as tg:
                for nc, types in zip(conns, NODES, strict=True):
                    tg.start_soon(ensure_stream, nc.jetstream(), config, types)
            have = set((await js.stream_info(config.stream)).config.subjects or ())
            lost = set(minimal(have | union)) - have
            assert not lost, f"round {round_}: another node's update removed {sorted(lost)}"
            await js.delete_stream(config.stream)
    finally:
        for nc in conns:
            await nc.close()


async def test_subjects_another_stream_holds_are_a_clear_error() -> None:
    from nats.js import api

    ns = f"taken{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    try:  # someone else's stream over this namespace's subjects
        await js.add_stream(api.StreamConfig(name=f"OTHER{ns.upper()}", subjects=[f"{ns}.>"]))
        config = NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper())
        with pytest.raises(RuntimeError, match="cannot create or extend the JetStream stream"):
            await ensure_stream(js, config, (Fill,))
    finally:
        await js.delete_stream(f"OTHER{ns.upper()}")
        await nc.close()

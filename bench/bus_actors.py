"""Actors for the bus benchmark: a paced source, relays, and a sink that records latency.

Each hop has its own message type (``Hop0`` … ``Hop5``) so routing is by type, as in the engine.
Latency is ``time.monotonic_ns()`` at the sink minus the source's stamp: one system-wide clock,
comparable across processes on one machine.
"""

from __future__ import annotations

import time
from typing import ClassVar

import anyio
import msgspec
import numpy as np

from levibot.config import Config
from levibot.messages import Message, Overflow
from levibot.registry import register
from levibot.runtime import Actor, SourceActor


class _Hop(Message, frozen=True, kw_only=True):
    seq: int
    t0: int  # monotonic ns at the source
    overflow: ClassVar[Overflow] = Overflow.BLOCK


def _hop(i: int) -> type[_Hop]:
    root = f"lbbench.h{i}"
    return msgspec.defstruct(  # type: ignore[return-value]
        f"Hop{i}",
        [],
        bases=(_Hop,),
        frozen=True,
        kw_only=True,
        namespace={"subject_root": root, "subject": lambda self, r=root: r},
    )


HOPS = [_hop(i) for i in range(6)]


class SourceConfig(Config, frozen=True, kw_only=True):
    count: int = 5_000
    rate: float = 0.0  # messages per second; 0: as fast as possible
    warmup: int = 200


class BenchSource(SourceActor[SourceConfig]):
    name = "bsource"
    emits = (HOPS[0],)
    config_type = SourceConfig

    async def run(self) -> None:
        hop = HOPS[0]
        interval = 1e9 / self.config.rate if self.config.rate else 0.0
        start = time.monotonic_ns()
        for seq in range(self.config.count + self.config.warmup):
            if interval:
                due = start + int(seq * interval)
                # At least 1 ms: a shorter sleep rounds to zero on uvloop, and the source would
                # spin a core that the measured stages need (this VM has two).
                while (now := time.monotonic_ns()) < due:  # noqa: ASYNC110 (pacing to a deadline)
                    await anyio.sleep(max(0.001, (due - now) / 1e9))
            t = time.monotonic_ns()
            await self.ctx.publish(hop(ts_event=t, ts_init=t, seq=seq, t0=t))


def _relay(i: int) -> type[Actor[Config]]:
    src, dst = HOPS[i], HOPS[i + 1]

    class Relay(Actor[Config]):
        name = f"brelay{i}"
        consumes = (src,)
        emits = (dst,)

        async def handle(self, msg: _Hop) -> None:
            await self.ctx.publish(dst(ts_event=msg.ts_event, ts_init=msg.ts_init,
                                       seq=msg.seq, t0=msg.t0))  # fmt: skip

    Relay.__name__ = Relay.__qualname__ = f"Relay{i}"
    return Relay


RELAYS = [_relay(i) for i in range(5)]


class SinkConfig(Config, frozen=True, kw_only=True):
    out: str = ""  # .npy file: first and last receive time, then every latency (ns)


class BenchSink(Actor[SinkConfig]):
    """Records the latency of every message of its hop type."""

    config_type = SinkConfig

    async def on_start(self) -> None:
        self.lat: list[int] = []
        self.first = 0
        self.last = 0

    async def handle(self, msg: _Hop) -> None:
        now = time.monotonic_ns()
        if not self.first:
            self.first = now
        self.last = now
        self.lat.append(now - msg.t0)

    async def on_stop(self) -> None:
        if self.config.out:
            np.save(self.config.out, np.array([self.first, self.last, *self.lat], dtype=np.int64))


def _sink(i: int) -> type[BenchSink]:
    cls = type(f"Sink{i}", (BenchSink,), {"name": f"bsink{i}", "consumes": (HOPS[i],)})
    return cls


SINKS = [_sink(i) for i in range(6)]

for _cls in (BenchSource, *RELAYS, *SINKS):
    globals()[_cls.__name__] = _cls
    register(_cls.name, f"{__name__}:{_cls.__name__}")

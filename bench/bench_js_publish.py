"""Durable egress's publisher against nats-py's ``js.publish``: client CPU per message.

Both publish the same batches of order-event-sized messages (each with its ``Nats-Msg-Id``) to a
real JetStream stream and wait for every ack before the next batch, as ``DurableEgress`` does:

  js.publish   one ``js.publish`` per message, the batch gathered (the egress until issue 12)
  publisher    ``levibot.bus._jspub.JetStreamPublisher``: plain PUBs, one ack subscription

For each batch size the two alternate for ``--rounds`` rounds on one uvloop; the figures are the
medians of this process's CPU (user + system) and wall time per message, and their ratio. The
server's own work is the same for both and not counted.

    python -m bench.bench_js_publish [--messages 3000] [--rounds 5] [--batches 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import uvloop
from nats.js import api

from levibot.bus._jspub import JetStreamPublisher
from levibot.testenv import NATS_URL

Item = tuple[str, bytes, dict[str, str]]
Publish = Callable[[list[Item]], Awaitable[None]]


def gathered(js: Any) -> Publish:
    async def publish(items: list[Item]) -> None:
        results = await asyncio.gather(
            *(js.publish(s, d, timeout=2.0, headers=h) for s, d, h in items),
            return_exceptions=True,
        )
        assert not any(isinstance(r, BaseException) for r in results), results

    return publish


def lean(publisher: JetStreamPublisher) -> Publish:
    async def publish(items: list[Item]) -> None:
        results = await publisher.publish(items, 2.0)
        assert results == [None] * len(items), results

    return publish


async def one_round(
    publish: Publish, subject: str, tag: str, n: int, batch: int
) -> tuple[float, float]:
    """Publish ``n`` messages in batches; return (CPU µs, wall µs) per message."""
    payload = b"x" * 180  # about an encoded order event
    items = [
        (subject, payload, {"Nats-Msg-Id": f"{tag}:{i}", "Lb-Origin": "bench"}) for i in range(n)
    ]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, n, batch):
        await publish(items[start : start + batch])
    return (time.process_time() - cpu) * 1e6 / n, (time.perf_counter() - wall) * 1e6 / n


async def run(url: str, messages: int, rounds: int, batches: list[int]) -> dict[str, Any]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"JSBENCH{uuid.uuid4().hex[:8].upper()}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=api.StorageType.MEMORY)
    ways = {"js.publish": gathered(js), "publisher": lean(JetStreamPublisher(nc))}
    out: dict[str, Any] = {"messages": messages, "rounds": rounds, "batches": {}}
    try:
        for way, publish in ways.items():  # warm-up: connections, the ack subscription
            await one_round(publish, f"{stream}.warm", f"warm-{way}", 200, 4)
        for batch in batches:
            samples: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
            for r in range(rounds):
                for way, publish in ways.items():
                    tag = f"{way}-{batch}-{r}"
                    samples[way].append(
                        await one_round(publish, f"{stream}.b", tag, messages, batch)
                    )
            row = {
                way: {
                    "cpu_us": statistics.median(c for c, _ in s),
                    "wall_us": statistics.median(w for _, w in s),
                }
                for way, s in samples.items()
            }
            row["cpu_ratio"] = row["publisher"]["cpu_us"] / row["js.publish"]["cpu_us"]
            row["wall_ratio"] = row["publisher"]["wall_us"] / row["js.publish"]["wall_us"]
            out["batches"][batch] = row
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--nats", default=NATS_URL)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    result = uvloop.run(run(args.nats, args.messages, args.rounds, args.batches))
    head = ("batch", "js.publish cpu", "publisher cpu", "ratio", "wall ratio")
    print("{:>5}  {:>14}  {:>13}  {:>5}  {:>10}".format(*head))
    for batch, row in result["batches"].items():
        before, after = row["js.publish"]["cpu_us"], row["publisher"]["cpu_us"]
        print(
            f"{batch:>5}  {before:>11.1f} µs  {after:>10.1f} µs"
            f"  {row['cpu_ratio']:>5.2f}  {row['wall_ratio']:>10.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

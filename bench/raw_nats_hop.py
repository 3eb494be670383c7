"""Raw nats-py, for scale: one publish → subscribe hop between two processes.

Measured as ``bench.bench_bus`` measures a levibot hop (``bench.hop_harness``): a source process
stamps ``time.monotonic_ns()`` into each message (msgpack ``(seq, t0)``), a sink process records
the latency at its callback; paced at ``rate`` msg/s for latency, unpaced for throughput
(messages per second from the first send to the last receive). No headers, one subscription,
plain ``nc.publish``: the floor any client-side framing on nats-py stands on.

    python -m bench.raw_nats_hop [--count 3000] [--rate 2000] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import nats

from bench.hop_harness import WARMUP, Client, sink_arguments, sink_main, stats, wait_ready
from bench.hop_harness import hop as _hop
from levibot.testenv import NATS_URL

__all__ = ["NATS_PY", "WARMUP", "hop", "stats", "wait_ready"]


async def _subscribe(nc: Any, subject: str, on_data: Callable[[bytes], None]) -> None:
    async def cb(msg: Any) -> None:  # nats-py's callbacks are coroutines, run by a task
        on_data(msg.data)

    await nc.subscribe(subject, cb=cb)
    await nc.flush()


async def _publish(nc: Any, subject: str, data: bytes) -> None:
    await nc.publish(subject, data)


async def _close(nc: Any) -> None:
    await nc.flush()
    await nc.close()


#: nats-py as levibot's ingress uses it: ``subscribe(cb=...)``.
NATS_PY = Client(nats.connect, _subscribe, _publish, _close)


def hop(url: str, count: int, rate: float, warmup: int = WARMUP) -> dict[str, float]:
    """Return p50/p99 µs and msgs/s of ``count + warmup`` messages over one raw hop."""
    r = _hop("bench.raw_nats_hop", "py", NATS_PY, url, count, rate, warmup)
    return {k: r[k] for k in ("p50_us", "p99_us", "msgs_per_s")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--rate", type=float, default=2000.0)
    sink_arguments(p, {"py": NATS_PY})
    args = p.parse_args()
    if args.sink:
        sink_main(args, {"py": NATS_PY})
        return
    print("latency   ", hop(args.nats, args.count, args.rate))
    print("throughput", hop(args.nats, args.count * 4, 0.0))


if __name__ == "__main__":
    main()

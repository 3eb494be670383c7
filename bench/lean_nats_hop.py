"""``CoreLink`` (levibot's lean NATS core connection) against nats-py over one hop, in one run.

Issue 12's transport goals sat at or below the floor nats-py itself sets on this machine, and
nats-core, the maintainers' lean client, does not beat it (docs/nats-core-evaluation.md): it
reads with a ``StreamReader`` ``readline``/``readexactly`` per message. ``levibot.bus._link``
is a client built the other way: an ``asyncio.Protocol`` that parses every message of a read
inside ``data_received`` and calls a plain callback there (no subscription task, no queue, no
``Msg`` object), and writes what a loop turn published with one ``transport.write``.

The measurement is ``bench.raw_nats_hop``'s (``bench.hop_harness``), both ends of a hop on the
same client, the two clients alternated (A, B, then B, A, ...), medians of ``--repeats``:
latency paced at ``--rate``, throughput and the CPU each end spends per message unpaced.

    python -m bench.lean_nats_hop [--repeats 5] [--count 3000] [--rate 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from typing import Any

from bench.hop_harness import Client, hop, sink_arguments, sink_main
from bench.raw_nats_hop import NATS_PY
from levibot.bus._link import CoreLink
from levibot.testenv import NATS_URL


async def _connect(url: str) -> CoreLink:
    return await CoreLink(url).connect()


async def _subscribe(link: CoreLink, subject: str, on_data: Callable[[bytes], None]) -> None:
    link.subscribe(subject, lambda _subject, _reply, data, _headers: on_data(data))
    await link.flush()


async def _publish(link: CoreLink, subject: str, data: bytes) -> None:
    await link.publish(subject, data)


LINK = Client(_connect, _subscribe, _publish, lambda link: link.close())
VARIANTS = {"py": NATS_PY, "lean": LINK}

#: Paced CPU per message is mostly the pacing loop's, and the percentiles of an unpaced run are
#: queueing, so each part keeps what it measures.
KEEP = {
    "latency": ("p50_us", "p99_us"),
    "throughput": ("msgs_per_s", "pub_cpu_ns", "sub_cpu_ns"),
}


def run(url: str, repeats: int, count: int, rate: float) -> dict[str, Any]:
    """Alternate the clients ``repeats`` times; return the medians and ratios against py."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        part: {v: [] for v in VARIANTS} for part in KEEP
    }
    for r in range(repeats):
        for v in reversed(VARIANTS) if r % 2 else VARIANTS:
            client = VARIANTS[v]
            runs["latency"][v].append(hop("bench.lean_nats_hop", v, client, url, count, rate))
            runs["throughput"][v].append(hop("bench.lean_nats_hop", v, client, url, count * 4, 0))
    out: dict[str, Any] = {
        part: {v: {k: statistics.median(x[k] for x in runs[part][v]) for k in keys}
               for v in VARIANTS}
        for part, keys in KEEP.items()
    }  # fmt: skip
    out["lean_vs_py"] = {
        part: {k: out[part]["lean"][k] / out[part]["py"][k] for k in keys}
        for part, keys in KEEP.items()
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--rate", type=float, default=2000.0)
    sink_arguments(p, VARIANTS)
    args = p.parse_args()
    if args.sink:
        sink_main(args, VARIANTS)
        return
    load0 = os.getloadavg()
    result = run(args.nats, args.repeats, args.count, args.rate)
    result["env"] = {"repeats": args.repeats, "count": args.count, "rate": args.rate,
                     "loadavg_before": load0, "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""nats-core (the NATS maintainers' lean client, Python ≥ 3.13) against nats-py, in one run.

The measurement of ``bench.raw_nats_hop`` for both clients: a source process stamps
``time.monotonic_ns()`` into each message (msgpack ``(seq, t0)``), a sink process records the
latency on receipt; paced at ``--rate`` msg/s for latency, unpaced for throughput. Both ends of
a hop use the same client. Beside latency and throughput, the CPU time each side spends per
message in the unpaced run (process CPU time, ``time.process_time_ns``), and a publish-only run
per client (no sink: what publishing a frame costs a node's loop). Variants, alternated
(A, B, C, D, then D, C, B, A, …), medians over ``--repeats``, ratios against nats-py from the
same run:

  py        nats-py 2.x: ``nc.subscribe(subject, cb=...)`` (as levibot's ingress uses it)
  core      nats-core: ``async for msg in sub`` (its documented receive path)
  core-cb   nats-core: ``sub.add_callback(fn)``, a synchronous callback run by the read loop
            (the message is queued as well, so the subscription has no pending limit here)
  core-0    as ``core``, with the client's 5 ms minimum flush interval set to 0 (a private
            attribute, ``_min_flush_interval``): what its write path costs without the delay

nats-core needs Python ≥ 3.13; levibot's own venv is 3.11, so run it from a 3.13 venv
(docs/nats-core-evaluation.md):

    /work/venv313/bin/python -m bench.nats_core_hop [--repeats 5] [--count 3000] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from importlib.metadata import version
from typing import Any

import nats
import uvloop

from bench.hop_harness import WARMUP, Client, sink_arguments, sink_main
from bench.hop_harness import hop as _hop
from bench.raw_nats_hop import NATS_PY
from levibot.testenv import NATS_URL

try:
    import nats.client as core  # nats-core installs into nats-py's ``nats`` package
except ImportError as exc:  # pragma: no cover - the message is the point
    raise SystemExit(
        f"bench.nats_core_hop needs nats-core, which needs Python >= 3.13 (this is "
        f"{sys.version.split()[0]}): {exc}.\n"
        "  python3.13 -m venv /work/venv313\n"
        "  /work/venv313/bin/pip install 'nats-core[nkeys]' -e .\n"
        "  /work/venv313/bin/python -m bench.nats_core_hop"
    ) from None

CLIENTS = ("py", "core", "core-0")  # publish-only: the receive path plays no part


async def _connect_core(url: str, min_flush_interval: float | None = None) -> Any:
    nc = await core.connect(url)
    if min_flush_interval is not None:
        nc._min_flush_interval = min_flush_interval  # 0: flush on the next loop turn, as nats-py
    return nc


async def _connect(variant: str) -> Any:
    if variant == "py":
        return await nats.connect(_URL)
    return await _connect_core(_URL, 0.0 if variant == "core-0" else None)


async def _subscribe_iter(nc: Any, subject: str, on_data: Any) -> None:
    sub = await nc.subscribe(subject)

    async def consume() -> None:
        async for msg in sub:
            on_data(msg.data)

    _tasks.add(asyncio.get_running_loop().create_task(consume()))  # ends when the sink exits
    await nc.flush()


async def _subscribe_cb(nc: Any, subject: str, on_data: Any) -> None:
    sub = await nc.subscribe(subject, max_pending_messages=None, max_pending_bytes=None)
    sub.add_callback(lambda msg: on_data(msg.data))
    await nc.flush()


async def _publish(nc: Any, subject: str, data: bytes) -> None:
    await nc.publish(subject, data)


async def _close(nc: Any) -> None:
    await nc.flush()
    await nc.close()


_tasks: set[asyncio.Task[None]] = set()
VARIANTS = {
    "py": NATS_PY,
    "core": Client(_connect_core, _subscribe_iter, _publish, _close),
    "core-cb": Client(_connect_core, _subscribe_cb, _publish, _close),
    "core-0": Client(lambda url: _connect_core(url, 0.0), _subscribe_iter, _publish, _close),
}


def hop(variant: str, count: int, rate: float, warmup: int = WARMUP) -> dict[str, float]:
    """Return p50/p99 µs, msgs/s and CPU ns per message at each end over one hop."""
    return _hop("bench.nats_core_hop", variant, VARIANTS[variant], _URL, count, rate, warmup)


# -- publish only --------------------------------------------------------------------------


async def _publish_only(variant: str, n: int, size: int) -> float:
    nc = await _connect(variant)
    subject = f"lbcore.pub.{uuid.uuid4().hex[:8]}"  # nobody listens: the server drops them
    payload = os.urandom(size)
    for _ in range(200):  # warm up
        await nc.publish(subject, payload)
    await nc.flush()
    cpu0 = time.process_time_ns()
    for seq in range(n):
        await nc.publish(subject, payload)
        if seq % 256 == 255:
            await asyncio.sleep(0)
    await nc.flush()
    cpu = time.process_time_ns() - cpu0
    await nc.close()
    return cpu / n


def publish_only(variant: str, n: int, size: int) -> float:
    """Return the CPU ns per publish of ``n`` unpaced ``size``-byte messages (flush included)."""
    return uvloop.run(_publish_only(variant, n, size))


# -- the run -------------------------------------------------------------------------------


#: The figures each part reports: paced CPU per message is mostly the pacing loop's, and
#: latency percentiles of an unpaced run are queueing, so each part keeps what it measures.
KEEP = {
    "latency": ("p50_us", "p99_us"),
    "throughput": ("msgs_per_s", "pub_cpu_ns", "sub_cpu_ns"),
}


def _median(runs: list[dict[str, float]], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in keys or runs[0]}


def run(repeats: int, count: int, rate: float, pub_n: int, sizes: list[int]) -> dict[str, Any]:
    """Alternate the variants ``repeats`` times; return the medians and ratios against py."""
    lat: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    thr: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    pub: dict[str, list[dict[str, float]]] = {c: [] for c in CLIENTS}
    for r in range(repeats):
        flip = r % 2 == 1
        for v in reversed(VARIANTS) if flip else VARIANTS:
            lat[v].append(hop(v, count, rate))
        for v in reversed(VARIANTS) if flip else VARIANTS:
            thr[v].append(hop(v, count * 4, 0.0))
        for c in reversed(CLIENTS) if flip else CLIENTS:
            pub[c].append({f"cpu_ns_{s}B": publish_only(c, pub_n, s) for s in sizes})
    out: dict[str, Any] = {
        "latency": {v: _median(lat[v], KEEP["latency"]) for v in VARIANTS},
        "throughput": {v: _median(thr[v], KEEP["throughput"]) for v in VARIANTS},
        "publish_only": {c: _median(pub[c]) for c in CLIENTS},
    }
    out["ratios_vs_py"] = {
        part: {
            v: {k: out[part][v][k] / out[part]["py"][k] for k in out[part][v]}
            for v in out[part]
            if v != "py"
        }
        for part in ("latency", "throughput", "publish_only")
    }
    return out


def _table(result: dict[str, Any]) -> str:
    """The medians as a table, each with its ratio against py (nats-core ÷ nats-py)."""
    rows = []
    for part in ("latency", "throughput", "publish_only"):
        for v, figures in result[part].items():
            for k, x in figures.items():
                ratio = result["ratios_vs_py"][part].get(v, {}).get(k)
                cell = f"{x:12.1f}" + (f"  ×{ratio:.2f}" if ratio is not None else "")
                rows.append(f"{part:12} {v:8} {k:12} {cell}")
    return "\n".join(rows)


def main() -> None:
    global _URL
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--pub-count", type=int, default=20000)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 1024])
    sink_arguments(p, VARIANTS)
    args = p.parse_args()
    _URL = args.nats
    if args.sink:
        sink_main(args, VARIANTS)
        return
    load0 = os.getloadavg()
    started = time.monotonic()
    result = run(args.repeats, args.count, args.rate, args.pub_count, args.sizes)
    result["env"] = {
        "python": sys.version.split()[0],
        "nats-py": version("nats-py"),
        "nats-core": version("nats-core"),
        "uvloop": version("uvloop"),
        "repeats": args.repeats,
        "count": args.count,
        "rate": args.rate,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result, indent=1))
    print(_table(result))


if __name__ == "__main__":
    main()

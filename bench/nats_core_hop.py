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
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np
import uvloop

from bench.raw_nats_hop import WARMUP, stats, wait_ready
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

VARIANTS = ("py", "core", "core-cb", "core-0")
CLIENTS = ("py", "core", "core-0")  # publish-only: the receive path plays no part
_URL = NATS_URL  # set from --nats in every process


async def _connect(variant: str) -> Any:
    if variant == "py":
        return await nats.connect(_URL)
    nc = await core.connect(_URL)
    if variant == "core-0":
        nc._min_flush_interval = 0.0  # flush on the next loop turn, as nats-py does
    return nc


# -- the two ends of a hop -----------------------------------------------------------------


async def _sink(variant: str, subject: str, total: int, out: Path, ready: Path) -> None:
    nc = await _connect(variant)
    decode = msgspec.msgpack.Decoder(tuple[int, int]).decode
    lat: list[int] = []
    times = [0, 0]
    done = asyncio.Event()

    def on_data(data: bytes) -> None:
        now = time.monotonic_ns()
        _seq, t0 = decode(data)
        if not times[0]:
            times[0] = now
        times[1] = now
        lat.append(now - t0)
        if len(lat) >= total:
            done.set()

    consumer = None
    if variant == "py":

        async def cb(msg: Any) -> None:
            on_data(msg.data)

        await nc.subscribe(subject, cb=cb)
    elif variant == "core-cb":
        sub = await nc.subscribe(subject, max_pending_messages=None, max_pending_bytes=None)
        sub.add_callback(lambda msg: on_data(msg.data))
    else:
        sub = await nc.subscribe(subject)

        async def consume() -> None:
            async for msg in sub:
                on_data(msg.data)

        consumer = asyncio.create_task(consume())
    await nc.flush()
    cpu0 = time.process_time_ns()
    ready.touch()  # noqa: ASYNC240 (once, before the measured messages)
    await asyncio.wait_for(done.wait(), 120)
    cpu = time.process_time_ns() - cpu0
    np.save(out, np.array([*times, cpu, *lat], dtype=np.int64))
    if consumer is not None:
        consumer.cancel()
    await nc.close()


async def _source(variant: str, subject: str, total: int, rate: float) -> int:
    """Publish ``total`` stamped messages; return the CPU time spent publishing (ns)."""
    nc = await _connect(variant)
    encode = msgspec.msgpack.Encoder().encode
    interval = 1e9 / rate if rate else 0.0
    cpu0 = time.process_time_ns()
    start = time.monotonic_ns()
    for seq in range(total):
        if interval:
            due = start + int(seq * interval)
            while (now := time.monotonic_ns()) < due:  # noqa: ASYNC110 (pacing to a deadline)
                await asyncio.sleep(max(0.001, (due - now) / 1e9))  # as bench_bus paces
        await nc.publish(subject, encode((seq, time.monotonic_ns())))
        if not interval and seq % 256 == 255:
            await asyncio.sleep(0)  # let the flusher write, as a node's loop would
    await nc.flush()
    cpu = time.process_time_ns() - cpu0
    await nc.close()
    return cpu


def hop(variant: str, count: int, rate: float, warmup: int = WARMUP) -> dict[str, float]:
    """Return p50/p99 µs, msgs/s and CPU ns per message at each end over one hop."""
    tmp = Path(tempfile.mkdtemp(prefix="lbcore"))
    out, ready = tmp / "sink.npy", tmp / "ready"
    subject = f"lbcore.{uuid.uuid4().hex[:8]}"
    total = count + warmup
    cmd = [sys.executable, "-m", "bench.nats_core_hop", "--sink", variant, "--nats", _URL,
           "--subject", subject, "--total", str(total),
           "--out", str(out), "--ready", str(ready)]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        wait_ready(proc, ready, f"the {variant} sink")
        src_cpu = uvloop.run(_source(variant, subject, total, rate))
        if proc.wait(60) != 0:
            raise RuntimeError(f"the {variant} sink failed (exit {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
    data = np.load(out)
    result = stats(data[3:], int(data[0]), int(data[1]), warmup)
    result["pub_cpu_ns"] = src_cpu / total
    result["sub_cpu_ns"] = float(data[2]) / total
    return result


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
    p.add_argument("--sink", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--total", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    _URL = args.nats
    if args.sink:
        uvloop.run(_sink(args.sink, args.subject, args.total, args.out, args.ready))
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

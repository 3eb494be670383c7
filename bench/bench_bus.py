"""Bus benchmark: one hop and a 5-stage chain, each beside a bare ``asyncio.Queue`` chain.

Configurations, all on uvloop:
  bare     plain ``asyncio.Queue`` hops between tasks (the baseline, measured in the same run)
  inproc   levibot nodes' mailboxes and runners, one process, no NATS
  mirror   the same with the NATS mirror on (every message also encoded and published)
  procs    the stages split into processes connected only by NATS

Latency: paced at ``--rate`` msg/s so queueing does not dominate; p50/p99 per run, the median
over ``--repeats`` runs. Throughput: unpaced, messages/s at the sink. Ratios are against bare.

    python -m bench.bench_bus [--repeats 3] [--quick] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import uvloop

from bench.hop_harness import stats
from levibot.logging import configure
from levibot.runtime.node import Node
from levibot.settings import load_settings
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, wait_until, write_config

RESULTS = Path(__file__).parent / "results"


# -- bare -------------------------------------------------------------------------------------


async def _bare(hops: int, count: int, rate: float, warmup: int) -> dict[str, float]:
    queues: list[asyncio.Queue[tuple[int, int]]] = [asyncio.Queue(4096) for _ in range(hops)]
    lat: list[int] = []
    times: list[int] = []

    async def relay(i: int) -> None:
        src, dst = queues[i], queues[i + 1]
        while True:
            item = await src.get()
            await dst.put(item)

    async def sink() -> None:
        q = queues[-1]
        for _ in range(count + warmup):
            _seq, t0 = await q.get()
            now = time.monotonic_ns()
            times.append(now)
            lat.append(now - t0)

    async def source() -> None:
        interval = 1e9 / rate if rate else 0.0
        start = time.monotonic_ns()
        for seq in range(count + warmup):
            if interval:
                due = start + int(seq * interval)
                # At least 1 ms: a shorter sleep rounds to zero on uvloop, and the source would
                # spin a core that the measured stages need (this VM has two).
                while (now := time.monotonic_ns()) < due:  # noqa: ASYNC110 (pacing to a deadline)
                    await asyncio.sleep(max(0.001, (due - now) / 1e9))
            await queues[0].put((seq, time.monotonic_ns()))

    tasks = [asyncio.ensure_future(relay(i)) for i in range(hops - 1)]
    await asyncio.gather(source(), sink())
    for t in tasks:
        t.cancel()
    return stats(np.array(lat), times[0], times[-1], warmup)


# -- levibot nodes ------------------------------------------------------------------------------


def _chain(hops: int) -> list[str]:
    return ["bsource", *(f"brelay{i}" for i in range(hops - 1)), f"bsink{hops - 1}"]


def _node_settings(actors: list[str], count: int, rate: float, nats: str = "", **node: Any) -> Any:
    return load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["bench.bus_actors"], "groups": ["all"], "http_port": -1,
                     "stop_when_sources_done": True, **node},
            "groups": {"all": actors},
            "nats": {"url": nats, "namespace": f"b{uuid.uuid4().hex[:8]}"} if nats else {},
            "bsource": {"count": count, "rate": rate},
        },
    )  # fmt: skip


async def _inproc(hops: int, count: int, rate: float, warmup: int, nats: str) -> dict[str, float]:
    settings = _node_settings(_chain(hops), count, rate, nats)
    node = Node(settings)
    await node.run(handle_signals=False)
    sink = node.actors[f"bsink{hops - 1}"]
    return stats(np.array(sink.lat), sink.first, sink.last, warmup)


def _procs(hops: int, count: int, rate: float, warmup: int, nats: str) -> dict[str, float]:
    chain = _chain(hops)
    # one hop: source | sink. five hops: source+relay0 | relay1..relay3 | sink (2 NATS hops).
    parts = [chain[:1], chain[1:]] if hops == 1 else [chain[:2], chain[2:-1], chain[-1:]]
    tmp = Path(tempfile.mkdtemp(prefix="lbbench"))
    out = tmp / "sink.npy"
    ns = f"b{uuid.uuid4().hex[:8]}"
    groups = {f"g{i}": part for i, part in enumerate(parts)}
    cfg = write_config(
        tmp / "bench.toml",
        {
            "node": {"plugins": ["bench.bus_actors"], "drain_timeout_s": 10.0},
            "nats": {"url": nats, "namespace": ns, "stream": ns.upper()},
            "groups": groups,
            "bsource": {"count": count, "rate": rate},
            chain[-1]: {"out": str(out)},
        },
    )
    downstream = []
    for name in reversed(list(groups)[1:]):
        node = NodeProcess(cfg, "--groups", name, log=tmp / f"{name}.log")
        node.wait_ready()
        downstream.append(node)
    source = NodeProcess(
        cfg, "--groups", "g0", log=tmp / "g0.log",
        env={"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"},
    )  # fmt: skip
    source.wait(120)
    sink_node = downstream[0]

    def handled() -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{sink_node.port}/metrics") as r:
            text = r.read().decode()
        line = next(
            (
                x
                for x in text.splitlines()
                if x.startswith('levibot_actor_handled_total{actor="bsink')
            ),
            "x 0",
        )
        return float(line.rsplit(" ", 1)[1]) >= count + warmup

    wait_until(handled, 60, "sink")
    for node in downstream:
        node.signal(15)
        node.wait(30)
    data = np.load(out)
    return stats(data[2:], int(data[0]), int(data[1]), warmup)


# -- driver ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    warmup = 200
    results: dict[str, Any] = {}
    configs = ["bare", "inproc", "mirror", "procs"]
    for hops in (1, 5):
        for config in configs:
            for mode, count, rate in (("latency", args.count, args.rate),
                                      ("throughput", args.count * 4, 0.0)):  # fmt: skip
                runs = []
                for _ in range(args.repeats):
                    if config == "bare":
                        r = uvloop.run(_bare(hops, count, rate, warmup))
                    elif config in ("inproc", "mirror"):
                        nats = args.nats if config == "mirror" else ""
                        r = anyio.run(
                            _inproc, hops, count, rate, warmup, nats,
                            backend_options={"use_uvloop": True},
                        )  # fmt: skip
                    else:
                        r = _procs(hops, count, rate, warmup, args.nats)
                    runs.append(r)
                key = f"{hops}hop/{config}/{mode}"
                results[key] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"{key:32s} " + "  ".join(f"{k}={v:,.1f}" for k, v in results[key].items()),
                      flush=True)  # fmt: skip
    return results


def table(results: dict[str, Any]) -> str:
    rows = ["| hops | config | p50 µs | p99 µs | ×bare p50 | msgs/s | ×bare msgs/s |",
            "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for hops in (1, 5):
        bare_l = results[f"{hops}hop/bare/latency"]
        bare_t = results[f"{hops}hop/bare/throughput"]
        for config in ("bare", "inproc", "mirror", "procs"):
            lat = results[f"{hops}hop/{config}/latency"]
            thr = results[f"{hops}hop/{config}/throughput"]
            rows.append(
                f"| {hops} | {config} | {lat['p50_us']:.1f} | {lat['p99_us']:.1f} | "
                f"{lat['p50_us'] / bare_l['p50_us']:.2f} | {thr['msgs_per_s']:,.0f} | "
                f"{thr['msgs_per_s'] / bare_t['msgs_per_s']:.2f} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--nats", default=NATS_URL, help="default: levibot.testenv's NATS_URL")
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer messages")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.count = 1, 1000
    configure("warning")
    results = run(args)
    print()
    print(table(results))
    RESULTS.mkdir(exist_ok=True)
    doc = {"machine": platform.platform(), "cpus": __import__("os").cpu_count(),
           "python": platform.python_version(), "args": vars(args), "results": results}  # fmt: skip
    (RESULTS / "bus.json").write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {RESULTS / 'bus.json'}")


if __name__ == "__main__":
    main()

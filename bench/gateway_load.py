"""Load generator for ``bench_gateway.py``, run as its own process (never imported by levibot).

``ws``: open ``--clients`` websockets, subscribe each to ``signals``, print ``READY``; for every
round, count events per client and print ``DONE <round>`` once every client has all
``--events`` of it; at the end print one JSON line with per-round delivery latencies
(receive wall time minus the signal's ``ts_init``, µs: p50/p99) and last-receive times.
Rounds are told apart by the signal's ``strategy`` (``r0``, ``r1``...).

``rest``: ``--concurrency`` workers GET ``--path`` for ``--seconds``; print one JSON line with
requests/s and latency p50/p99 (µs). ``--key "Bearer <jwt>"`` sends an access token instead of
an API key; ``--keys-file`` (one API key a line) sends its keys in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

import aiohttp
import msgspec
import uvloop


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Event(msgspec.Struct):
    type: str
    data: dict[str, Any] | None = None


async def ws_load(args: argparse.Namespace) -> dict[str, Any]:
    decode = msgspec.json.Decoder(_Event).decode
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"X-API-Key": args.key}
    counts: list[dict[str, int]] = [dict() for _ in range(args.clients)]
    latencies: dict[str, list[float]] = {}
    last_recv: dict[str, int] = {}
    done_rounds: set[str] = set()
    complete: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        for i in range(0, args.clients, 100):  # connect in batches of 100
            batch = [session.ws_connect(args.url, headers=headers, max_msg_size=0)
                     for _ in range(min(100, args.clients - i))]  # fmt: skip
            sockets += await asyncio.gather(*batch)
        for ws in sockets:
            await ws.send_str('{"op":"subscribe","channels":["signals"]}')
        for ws in sockets:
            assert decode((await ws.receive()).data).type == "snapshot"
        print("READY", flush=True)

        async def reader(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            mine = counts[i]
            sample = i % args.sample_every == 0  # latency from a sample of the clients
            async for msg in ws:
                now = time.time_ns()
                event = decode(msg.data)
                if event.type != "event" or event.data is None:
                    continue
                rnd = event.data["strategy"]
                if rnd == "stop":
                    return
                mine[rnd] = mine.get(rnd, 0) + 1
                last_recv[rnd] = max(last_recv.get(rnd, 0), now)
                if sample:
                    latencies.setdefault(rnd, []).append((now - event.data["ts_init"]) / 1e3)
                if mine[rnd] == args.events:
                    complete[rnd] = complete.get(rnd, 0) + 1
                    if complete[rnd] == args.clients and rnd not in done_rounds:
                        done_rounds.add(rnd)
                        print(f"DONE {rnd}", flush=True)
            # closed by the server: a drop would show as missing events

        await asyncio.gather(*(reader(i, ws) for i, ws in enumerate(sockets)))
        for ws in sockets:
            await ws.close()
    return {
        "rounds": {
            rnd: {
                "p50_us": _pct(lat, 0.5),
                "p99_us": _pct(lat, 0.99),
                "last_recv_ns": last_recv.get(rnd, 0),
                "clients_complete": complete.get(rnd, 0),
            }
            for rnd, lat in latencies.items()
        }
    }


async def rest_load(args: argparse.Namespace) -> dict[str, Any]:
    # "Bearer <jwt>" authenticates with an access token, anything else is an API key.
    keys = args.keys
    auth = "Authorization" if keys[0].startswith("Bearer ") else "X-API-Key"
    all_headers = [{auth: key} for key in keys]
    sent = 0
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + args.seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < stop:
                headers = all_headers[sent % len(all_headers)]
                sent += 1
                t0 = time.perf_counter_ns()
                async with session.get(args.url, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append((time.perf_counter_ns() - t0) / 1e3)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_us": _pct(latencies, 0.5),
        "p99_us": _pct(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["ws", "rest"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--keys-file", default="", help="rest: API keys, one a line, in turn")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    args.keys = [args.key]
    if args.keys_file:
        with open(args.keys_file) as fh:
            args.keys = [line.strip() for line in fh if line.strip()]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    coro = ws_load(args) if args.mode == "ws" else rest_load(args)
    result = uvloop.run(coro)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

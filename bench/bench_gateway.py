"""Gateway throughput: websocket fan-out to 1,000 clients and REST ``GET /features/{symbol}``.

The gateway runs here (the real ``GatewayActor`` on an ephemeral port); the load comes from
``bench/gateway_load.py`` in a separate process, so client work does not share this event loop.

- ``ws.burst``: ``--events`` signals published through ``GatewayActor.handle`` as fast as the
  loop allows (yielding between them), each delivered to ``--clients`` subscribers; rows give
  deliveries/s (events × clients over first publish → last receive), signals/s fully fanned
  out, and delivery latency p50/p99 (publish ``ts_init`` → client receive, sampled clients).
  Median over ``--rounds`` rounds.
- ``ws.paced``: the same at ``--rate`` signals/s: latency without a burst queue in front.
- ``ws.handle``: µs per ``handle`` call with every client subscribed (encode once + one
  ``put_nowait`` per client): the cost the bus pays, whatever the clients do.
- ``rest.limits.memory`` vs ``rest.limits.redis``: authenticated ``GET /risk`` on two more
  gateways, rate limits in memory against shared through Redis (``ratio_vs_memory``), under
  the limits; ``rest.limits.at_limit.*`` the same with the key and IP over the production
  limits (every answer 429), ``rest.limits.many.*`` with 1,000 keys in turn, each under its
  limit. Measured by ``bench_rest_limits.py`` with wrk when installed (each redis row's
  ``load`` says which load generator ran).
- ``rest.features`` vs ``rest.health`` (the baseline: same server, no auth, no store):
  requests/s and latency p50/p99 with ``--concurrency`` connections for ``--seconds``, median
  of ``--rounds``. Features come from Redis (``--redis``) when it answers, else the in-memory
  read model; both rate limiters and API-key auth are on, as in production.

Run: ``.venv/bin/python bench/bench_gateway.py [--clients 1000 --events 200 --rounds 3]``;
writes ``bench/results/gateway.json``. Keep it under a minute.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.* as a script too

from bench import bench_rest_limits
from levibot.clock import LiveClock
from levibot.messages import Features, Signal, SignalSide
from levibot.testenv import REDIS_URL
from levibot.testing import RecordingContext
from sidecars.gateway.actor import GatewayActor, GatewayConfig
from sidecars.gateway.auth import FileKeyStore, new_key

LOAD = Path(__file__).with_name("gateway_load.py")
#: bench_rest_limits' cases -> this report's row names.
LIMIT_ROWS = {"under": "rest.limits", "at": "rest.limits.at_limit", "many": "rest.limits.many"}
RESULTS = Path(__file__).with_name("results") / "gateway.json"


def _signal(n: int, strategy: str) -> Signal:
    now = time.time_ns()
    return Signal(
        ts_event=n, ts_init=now, ts_ingress=now, symbol="BTCUSDT", strategy=strategy,
        side=SignalSide.LONG, probability=0.71, confidence=0.42, price=42_000.0 + n,
        atr=120.5, model_id="bench",
    )  # fmt: skip


async def _redis_ok(url: str) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except OSError:
        return False
    finally:
        await client.aclose()


async def _rest(port: int, key: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    out = await anyio.run_process([
        sys.executable, str(LOAD), "rest", "--url", f"http://127.0.0.1:{port}{path}",
        "--key", key, "--concurrency", str(args.concurrency), "--seconds", str(args.seconds),
    ])  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


async def _line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 20)).decode().strip()


async def _ws(actor: GatewayActor, key: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, str(LOAD), "ws", "--url", f"ws://127.0.0.1:{actor.port}/ws",
        "--key", key, "--clients", str(args.clients), "--events", str(args.events),
    ]  # fmt: skip
    handle_us: list[float] = []
    starts: dict[str, int] = {}
    async with await anyio.open_process(command) as proc:
        assert proc.stdout is not None
        lines = BufferedByteReceiveStream(proc.stdout)
        assert await _line(lines) == "READY"
        rounds = [f"burst{i}" for i in range(args.rounds)] + ["paced"]
        for name in rounds:
            starts[name] = time.time_ns()
            for n in range(args.events):
                msg = _signal(n, name)
                t0 = time.perf_counter_ns()
                await actor.handle(msg)
                handle_us.append((time.perf_counter_ns() - t0) / 1e3)
                await anyio.sleep(1 / args.rate if name == "paced" else 0)
            assert await _line(lines) == f"DONE {name}"
        await actor.handle(_signal(0, "stop"))
        report = json.loads(await _line(lines))
    per_round = {}
    for name in rounds:
        r = report["rounds"][name]
        span_s = (r["last_recv_ns"] - starts[name]) / 1e9
        per_round[name] = {
            "deliveries_per_s": args.events * args.clients / span_s,
            "signals_per_s": args.events / span_s,
            "p50_us": r["p50_us"],
            "p99_us": r["p99_us"],
            "clients_complete": r["clients_complete"],
        }
    bursts = [per_round[n] for n in rounds if n.startswith("burst")]
    med = {k: statistics.median(b[k] for b in bursts) for k in bursts[0]}
    return {
        "ws.burst": med,
        "ws.paced": per_round["paced"],
        "ws.handle": {
            "p50_us": statistics.median(handle_us),
            "p99_us": sorted(handle_us)[int(0.99 * len(handle_us))],
        },
        "dropped": actor.ctx.metrics.value("gateway_ws_dropped_total"),
    }


async def _limits(
    config: GatewayConfig, key: str, tmp: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Authenticated ``GET /risk`` with the rate limits in memory against shared through Redis,
    under the limits and at them (``bench_rest_limits.py``'s cases, rounds alternated): what
    sharing the limits costs. The load is wrk when installed, else ``gateway_load.py``."""
    opts = argparse.Namespace(
        rounds=args.rounds, seconds=max(1, round(args.seconds)), concurrency=args.concurrency,
        wrk=shutil.which("wrk"),
    )  # fmt: skip
    load = f"wrk -t1 -c{args.concurrency}" if opts.wrk else "bench/gateway_load.py"
    results: dict[str, Any] = {}
    for name in bench_rest_limits.CASES:
        out = await bench_rest_limits.case(name, config, key, tmp, opts)
        row = LIMIT_ROWS[name]
        results[f"{row}.memory"] = out["memory"]
        results[f"{row}.redis"] = out["redis"] | {
            k: out[k] for k in ("ratio_vs_memory", "ratio_paired_median", "cpu_ratio_vs_memory")
        } | {"load": load}  # fmt: skip
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    redis_url = args.redis if args.redis and await _redis_ok(args.redis) else ""
    prefix = f"bench-gw-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        plain, record = new_key("bench", ["read"])
        await FileKeyStore(Path(tmp) / "keys.json").add(record)
        config = GatewayConfig(
            port=0, data_dir=tmp, jwt_secret="bench-" + "x" * 32, heartbeat_s=0.0,
            rate_limit_per_ip=10**9, rate_limit_per_key=10**9, ws_queue_size=4096,
            redis_url=redis_url, redis_prefix=prefix,
        )  # fmt: skip
        actor = GatewayActor(RecordingContext("gateway", clock=LiveClock()), config)
        await actor.on_start()
        try:
            feats = Features(ts_event=1, ts_init=1, symbol="BTCUSDT", schema_hash="bench",
                             values=tuple(float(i) for i in range(40)), price=42_000.0)  # fmt: skip
            await actor.handle(feats)
            store = actor.services.feature_store if actor.services else None
            if store is not None:
                await store.put(feats)
            rest: dict[str, list[dict[str, Any]]] = {"rest.health": [], "rest.features": []}
            for _ in range(args.rounds):
                rest["rest.health"].append(await _rest(actor.port, plain, "/health", args))
                rest["rest.features"].append(
                    await _rest(actor.port, plain, "/features/BTCUSDT", args)
                )
            results: dict[str, Any] = {
                name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                for name, runs in rest.items()
            }
            results["rest.features"]["ratio_vs_health"] = (
                results["rest.features"]["rps"] / results["rest.health"]["rps"]
            )
            results.update(await _ws(actor, plain, args))
            if redis_url:
                results.update(await _limits(config, plain, tmp, args))
        finally:
            if redis_url and actor.services is not None and actor.services.redis is not None:
                keys = [k async for k in actor.services.redis.scan_iter(f"{prefix}:*")]
                if keys:
                    await actor.services.redis.delete(*keys)
            await actor.on_stop()
    return {
        "machine": {"python": platform.python_version(), "cpus": platform.machine()},
        "params": {**vars(args), "feature_source": "redis" if redis_url else "memory"},
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="signals/s in the paced round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--redis", default=REDIS_URL)
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = anyio.run(run, args, backend_options={"use_uvloop": True})
    report["wall_s"] = time.perf_counter() - t0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    r = report["results"]
    print(f"{'row':<28}{'rate':>16}{'p50 µs':>12}{'p99 µs':>12}")
    rows = [f"{row}.{side}" for row in LIMIT_ROWS.values() for side in ("memory", "redis")]
    for name in ["rest.health", "rest.features", *rows]:
        if name not in r:
            continue
        print(
            f"{name:<28}{r[name]['rps']:>12.0f} r/s"
            f"{r[name]['p50_us']:>12.0f}{r[name]['p99_us']:>12.0f}"
        )
    for name in ("ws.burst", "ws.paced"):
        print(f"{name:<28}{r[name]['deliveries_per_s']:>12.0f} d/s"
              f"{r[name]['p50_us']:>12.0f}{r[name]['p99_us']:>12.0f}")  # fmt: skip
    print(
        f"{'ws.handle':<28}{'':>16}{r['ws.handle']['p50_us']:>12.1f}{r['ws.handle']['p99_us']:>12.1f}"
    )
    for row in LIMIT_ROWS.values():
        if f"{row}.redis" in r:
            x = r[f"{row}.redis"]
            print(f"{row}: authenticated rps, limits shared through Redis / in memory: "
                  f"{x['ratio_vs_memory']:.2f} (by CPU/request {x['cpu_ratio_vs_memory']:.2f}; "
                  f"non-2xx {r[f'{row}.memory']['non_2xx']} / {x['non_2xx']}; "
                  f"load: {x['load']})")  # fmt: skip
    print(f"features/health rps ratio {r['rest.features']['ratio_vs_health']:.2f}; "
          f"signals/s fanned out to {args.clients} clients (burst): "
          f"{r['ws.burst']['signals_per_s']:.0f}; "
          f"dropped clients: {r['dropped']:.0f}; source: {report['params']['feature_source']}; "
          f"wall {report['wall_s']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()

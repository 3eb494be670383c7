"""Authenticated REST throughput with rate limits shared through Redis against in memory.

Two real ``GatewayActor``\\ s run in this process on ephemeral ports, alike but for where they
count: one in memory, one shared through Redis (``--redis``, a fresh key prefix per run, deleted
at the end). The load is ``wrk`` (``-t1 -c<concurrency>``: one thread, because the load and the
gateway share the machine) on authenticated ``GET /risk`` (``X-API-Key``); without ``wrk`` on
the PATH it is ``bench/gateway_load.py`` (aiohttp, one Python process, itself often the
bottleneck), and ``load`` says which. Three cases:

- ``under``: one key, limits far above what a run sends (10⁹ a window): every answer is 200,
  the cost of counting is all that differs.
- ``at``: a key and an IP already over the production limits (600 and 1,200 a 60 s window):
  every answer is 429, the cost of refusing (but for the key's 600 of a new window, when a
  window turns during the rounds).
- ``many``: 1,000 keys in turn (a wrk Lua script), each under the production per-key limit
  (600 a window; the IP's is 10⁹): every answer is 200, and each key sees a few requests a
  second, so its share's lease is often over when its next request comes.

``limiter`` gives the CPU of the limiter call alone (no HTTP), memory against Redis, under and
at the limits: the part of the per-request figures that differs, without their noise; and on
``many``'s keys, on a clock of its own that moves ``PACE_S`` a call (about the rps the HTTP
cases see here), so each key sees the requests a second it sees over HTTP. With it,
``redis_waits_per_1000``: calls of a thousand that the Redis limiter's shares could not decide,
each of which waited for a round trip (in ``many``, a key's first of a window, and any whose
share ran out before the next came).

Rounds alternate the two gateways (the order swapped every round); each side's figures are the
median over ``--rounds``, and ``ratio_vs_memory`` = redis rps ÷ memory rps, from this run;
``ratio_paired_median`` is the median of each round's own ratio, and ``cpu_ratio_vs_memory``
the inverse ratio of the gateway process's CPU per request (``cpu_us_per_req``: what the
throughput of a saturated gateway follows, and steadier on a shared machine than rps).
``non_2xx`` counts the answers that were not 2xx (wrk's "Non-2xx or 3xx responses").
``ratios`` lists them as ``bench_pipeline.ratios`` lists the issue's others (name, value,
goal, met, basis). With ``--same-loop``, ``same_loop_ratio`` is the median of rounds in which
both gateways (one process, one event loop) take load at once, half the connections each: the
loop's time goes to whichever costs less, so background load shakes it little, but a request
waiting for Redis also gives way to the other gateway's (latency counts, not CPU alone).

Run: ``.venv/bin/python bench/bench_rest_limits.py [--rounds 5 --seconds 2]``; writes
``bench/results/rest_limits.json``. About 50 s with the defaults. ``bench_gateway.py`` runs it
too (its ``rest.limits.*`` rows).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from levibot.clock import LiveClock
from levibot.testenv import REDIS_URL
from levibot.testing import RecordingContext
from sidecars.gateway.actor import GatewayActor, GatewayConfig
from sidecars.gateway.auth import ApiKey, FileKeyStore, new_key

LOAD = Path(__file__).with_name("gateway_load.py")
RESULTS = Path(__file__).with_name("results") / "rest_limits.json"
#: (per key, per IP) limits and API keys of each case; ``at`` spends them before measuring.
CASES = {"under": (10**9, 10**9, 1), "at": (600, 1200, 1), "many": (600, 10**9, 1000)}
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}
#: The limiter-alone ``many`` case's clock step per call: about the rps the HTTP cases see here.
PACE_S = 1 / 17_000


def _us(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    """Return rps, requests, non-2xx and latency p50/p99 (µs) from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    pct = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s))\s*$", out, re.M))
    return {
        "rps": rps,
        "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "p50_us": _us(pct["50"]),
        "p99_us": _us(pct["99"]),
    }


def _wrk_script(keys: list[str], path: Path) -> None:
    """Write a wrk Lua script that sends ``keys`` in turn, one a request."""
    listed = ",\n".join(f'"{k}"' for k in keys)
    path.write_text(f"""local keys = {{{listed}}}
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", nil, {{["X-API-Key"] = keys[i]}})
end
""")


async def load(port: int, keys: list[str], tmp: str, args: argparse.Namespace) -> dict[str, Any]:
    """Drive ``GET /risk`` on ``port`` for ``--seconds`` with ``keys`` in turn and return its
    figures, with the CPU this process (the gateways) spent per request: less shaken by other
    load than rps is."""
    url = f"http://127.0.0.1:{port}/risk"
    cpu0 = time.process_time()
    if args.wrk:
        command = [args.wrk, "-t1", f"-c{args.concurrency}", f"-d{args.seconds}s", "--latency"]
        if len(keys) > 1:
            script = Path(tmp) / "keys.lua"
            _wrk_script(keys, script)
            command += ["-s", str(script)]
        else:
            command += ["-H", f"X-API-Key: {keys[0]}"]
        out = await anyio.run_process([*command, url])
        r = parse_wrk(out.stdout.decode())
    else:
        keys_file = Path(tmp) / "keys.txt"
        keys_file.write_text("\n".join(keys))
        out = await anyio.run_process([
            sys.executable, str(LOAD), "rest", "--url", url, "--keys-file", str(keys_file),
            "--concurrency", str(args.concurrency), "--seconds", str(args.seconds),
        ])  # fmt: skip
        g = json.loads(out.stdout.decode().strip().splitlines()[-1])
        r = {"rps": g["rps"], "requests": g["requests"], "non_2xx": g["errors"],
             "socket_errors": 0, "p50_us": g["p50_us"], "p99_us": g["p99_us"]}  # fmt: skip
    r["cpu_us_per_req"] = (time.process_time() - cpu0) * 1e6 / max(1, r["requests"])
    return r


async def _spend(port: int, key: str, n: int) -> None:
    """Send ``n`` requests, one after the other."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(f"http://127.0.0.1:{port}/risk",
                                   headers={"X-API-Key": key}) as r:  # fmt: skip
                await r.read()


async def case(
    name: str, base: GatewayConfig, key: str, tmp: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Measure one case: the memory and the Redis gateway, rounds alternated.

    ``key`` is in ``tmp``'s ``keys.json``; a case with more keys makes the others.
    """
    per_key, per_ip, n_keys = CASES[name]
    keys = [key]
    records = msgspec.json.decode((Path(tmp) / "keys.json").read_bytes(), type=list[ApiKey])
    for i in range(n_keys - 1):
        plain, record = new_key(f"bench{i}", ["read"])
        keys.append(plain)
        records.append(record)
    actors: dict[str, GatewayActor] = {}
    for side, url in (("memory", ""), ("redis", base.redis_url)):
        data_dir = Path(tmp) / f"{name}-{side}"
        data_dir.mkdir()
        (data_dir / "keys.json").write_bytes(msgspec.json.encode(records))
        cfg = msgspec.structs.replace(
            base, redis_url=url, data_dir=str(data_dir), rate_limit_per_key=per_key,
            rate_limit_per_ip=per_ip, redis_prefix=f"{base.redis_prefix}:{name}",
        )  # fmt: skip
        actors[side] = GatewayActor(RecordingContext("gateway", clock=LiveClock()), cfg)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in actors}
    same_loop: list[float] = []
    try:
        for actor in actors.values():
            await actor.on_start()
            # Warm up (first-request work would fall on round 0's first side); "at" spends
            # the key's and the IP's windows.
            await _spend(actor.port, key, per_ip + 1 if name == "at" else 200)
        for i in range(args.rounds):
            order = list(actors) if i % 2 == 0 else list(reversed(actors))
            for side in order:
                runs[side].append(await load(actors[side].port, keys, tmp, args))
        half = argparse.Namespace(**{**vars(args), "concurrency": max(1, args.concurrency // 2)})
        for _ in range(args.rounds if getattr(args, "same_loop", False) else 0):
            both: dict[str, float] = {}

            async def one(side: str, both: dict[str, float] = both) -> None:
                both[side] = (await load(actors[side].port, keys, tmp, half))["rps"]

            async with anyio.create_task_group() as tg:
                for side in actors:
                    tg.start_soon(one, side)
            same_loop.append(both["redis"] / both["memory"])
    finally:
        for actor in actors.values():
            await actor.on_stop()
    out: dict[str, Any] = {}
    for side, rs in runs.items():
        out[side] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        out[side]["non_2xx"] = sum(r["non_2xx"] for r in rs)  # all rounds: any at all shows
        out[side]["rounds_rps"] = [round(r["rps"]) for r in rs]
    out["ratio_vs_memory"] = out["redis"]["rps"] / out["memory"]["rps"]
    # The same from each round's pair (run back to back), and the CPU per request: steadier
    # when other work on the machine comes and goes.
    pairs = zip(runs["redis"], runs["memory"], strict=True)
    out["ratio_paired_median"] = statistics.median(r["rps"] / m["rps"] for r, m in pairs)
    out["cpu_ratio_vs_memory"] = out["memory"]["cpu_us_per_req"] / out["redis"]["cpu_us_per_req"]
    if same_loop:
        out["same_loop_ratio"] = statistics.median(same_loop)
    return out


async def _cleanup(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def limiter_cost(url: str, prefix: str, rounds: int, calls: int = 1000) -> dict[str, Any]:
    """CPU µs per ``hit`` of the limiter alone, as the gateway builds it (``Fallback`` over
    ``Redis``, or ``Memory``), 32 callers at once with a loop turn between calls: under the
    limits, at them (spent), and on many keys in turn (paced, as the module says), the part of
    the per-request CPU above that is the limiter's; with the Redis calls that waited."""
    import redis.asyncio as aioredis
    import structlog

    from sidecars.gateway.auth import FallbackRateLimiter, MemoryRateLimiter, RedisRateLimiter
    from sidecars.gateway.redisguard import RedisBreaker

    class Waiting(RedisRateLimiter):
        """Count the calls the shares could not decide (``Fallback`` calls ``hit`` for them)."""

        waits = 0

        async def hit(self, *limits: tuple[str, int]) -> float | None:
            self.waits += 1
            return await super().hit(*limits)

    class Paced:
        """A clock that moves only when told (``PACE_S`` a call), and the turn of the keys."""

        def __init__(self) -> None:
            self.t = time.time()
            self.turn = itertools.count()

        def __call__(self) -> float:
            return self.t

    client = aioredis.from_url(url)
    out: dict[str, Any] = {}
    try:
        for name, (per_key, per_ip, n_keys) in CASES.items():
            if name == "at":
                per_key, per_ip = 1, 1  # spent from the second call on
            limits = (("ip:127.0.0.1", per_ip), ("key:bench", per_key))
            turns = [(("ip:127.0.0.1", per_ip), (f"key:bench{k}", per_key)) for k in range(n_keys)]
            paced = Paced() if n_keys > 1 else None
            shared = Waiting(client, 60.0, f"{prefix}:micro:{name}", now=paced or time.time)
            sides: dict[str, Any] = {
                "memory": MemoryRateLimiter(60.0, now=paced or time.monotonic),
                "redis": FallbackRateLimiter(
                    shared, MemoryRateLimiter(60.0, now=paced or time.monotonic),
                    RedisBreaker(structlog.get_logger(), now=paced or time.monotonic),
                ),
            }  # fmt: skip
            us: dict[str, list[float]] = {side: [] for side in sides}
            waits: list[float] = []
            for _ in range(rounds):
                for side, limiter in sides.items():

                    async def caller(limiter: Any = limiter, limits: Any = limits) -> None:
                        for _ in range(calls):
                            await limiter.hit(*limits)
                            await anyio.lowlevel.checkpoint()

                    async def in_turn(
                        limiter: Any = limiter, turns: Any = turns, clock: Any = paced
                    ) -> None:
                        for _ in range(calls):
                            clock.t += PACE_S
                            await limiter.hit(*turns[next(clock.turn) % len(turns)])
                            await anyio.lowlevel.checkpoint()

                    waited = shared.waits
                    t0 = time.process_time()
                    async with anyio.create_task_group() as tg:
                        for _ in range(32):
                            tg.start_soon(caller if paced is None else in_turn)
                    us[side].append((time.process_time() - t0) * 1e6 / (32 * calls))
                    if side == "redis":
                        waits.append((shared.waits - waited) * 1000 / (32 * calls))
            out[name] = {f"{side}_cpu_us_per_hit": statistics.median(v) for side, v in us.items()}
            out[name]["redis_waits_per_1000"] = statistics.median(waits)
    finally:
        await client.aclose()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every case of ``--cases``; return the report (``results`` per case)."""
    loadavg_before = os.getloadavg()
    prefix = f"bench-rl-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain, record = new_key("bench", ["read"])
        await FileKeyStore(Path(tmp) / "keys.json").add(record)
        base = GatewayConfig(
            port=0, data_dir=tmp, jwt_secret="bench-" + "x" * 32, heartbeat_s=0.0,
            redis_url=args.redis, redis_prefix=prefix,
        )  # fmt: skip
        try:
            for name in args.cases:
                results[name] = await case(name, base, plain, tmp, args)
            results["limiter"] = await limiter_cost(args.redis, prefix, args.rounds)
        finally:
            await _cleanup(args.redis, prefix)
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load": f"wrk -t1 -c{args.concurrency}" if args.wrk else "bench/gateway_load.py",
        "params": {k: v for k, v in vars(args).items() if k not in ("wrk", "out")},
        "loadavg_before": loadavg_before,
        "results": results,
    }


def parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=2, help="per run (wrk takes whole seconds)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--redis", default=REDIS_URL)
    p.add_argument("--out", type=Path, default=RESULTS, help="the JSON report")
    p.add_argument("--same-loop", action="store_true",
                   help="also load both gateways at once, half the connections each")  # fmt: skip
    p.add_argument("--no-wrk", dest="wrk", action="store_false",
                   help="load with bench/gateway_load.py even when wrk is installed")  # fmt: skip
    return p


#: What each case's ratio is called among the issue's ratios.
_RATIO_NAMES = {
    "under": "REST rps, limits in Redis ÷ memory (under the limits)",
    "at": "REST rps, limits in Redis ÷ memory (at the limits, 429s)",
    "many": "REST rps, limits in Redis ÷ memory (1,000 keys)",
}


def ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return this run's ratios in ``bench_pipeline.ratios``' shape (name, value, goal, met,
    basis), for a report that lists every ratio the issue names."""
    out = []
    for name, title in _RATIO_NAMES.items():
        r = report["results"].get(name)
        if r is None:
            continue
        value = r["ratio_vs_memory"]
        out.append({
            "name": title, "value": value, "goal": ">= 0.8", "met": bool(value >= 0.8),
            "basis": f"{r['redis']['rps']:,.0f} ÷ {r['memory']['rps']:,.0f} req/s "
                     f"({report['load']}; by CPU/request {r['cpu_ratio_vs_memory']:.2f})",
        })  # fmt: skip
    return out


def main() -> None:
    args = parser().parse_args()
    args.wrk = shutil.which("wrk") if args.wrk else None
    t0 = time.perf_counter()
    report = anyio.run(run, args, backend_options={"use_uvloop": True})
    report["wall_s"] = time.perf_counter() - t0
    report["loadavg_after"] = os.getloadavg()
    report["ratios"] = ratios(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    before, after = report["loadavg_before"][0], report["loadavg_after"][0]
    print(f"load: {report['load']}, {args.rounds} rounds × {args.seconds} s, "
          f"loadavg {before:.2f} → {after:.2f}")  # fmt: skip
    print(f"{'case':<8}{'limits':<8}{'rps':>9}{'p50 µs':>9}{'p99 µs':>9}{'CPU µs/req':>11}"
          f"{'non-2xx':>9}  rounds")  # fmt: skip
    for name in args.cases:
        r = report["results"][name]
        for side in ("memory", "redis"):
            s = r[side]
            print(f"{name:<8}{side:<8}{s['rps']:>9.0f}{s['p50_us']:>9.0f}{s['p99_us']:>9.0f}"
                  f"{s['cpu_us_per_req']:>11.0f}{s['non_2xx']:>9}  {s['rounds_rps']}")  # fmt: skip
        same = f"same loop {r['same_loop_ratio']:.2f}; " if "same_loop_ratio" in r else ""
        print(f"{name:<8}redis ÷ memory rps: {r['ratio_vs_memory']:.2f} (goal >= 0.8; "
              f"paired rounds {r['ratio_paired_median']:.2f}; "
              f"by CPU/request {r['cpu_ratio_vs_memory']:.2f}; {same}"
              f"{'met' if r['ratio_vs_memory'] >= 0.8 else 'NOT met'})")  # fmt: skip
    for name, r in report["results"]["limiter"].items():
        print(f"limiter alone, {name}: CPU µs per hit, memory {r['memory_cpu_us_per_hit']:.2f}, "
              f"redis {r['redis_cpu_us_per_hit']:.2f}; calls that waited for Redis "
              f"{r['redis_waits_per_1000']:.1f} per 1,000")  # fmt: skip
    print(f"wall {report['wall_s']:.1f} s")


if __name__ == "__main__":
    main()

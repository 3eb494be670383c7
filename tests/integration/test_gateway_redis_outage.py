"""Redis dies under load: the gateway keeps answering, the kill switch first.

The test runs its own redis-server on a free port, drives two gateways sharing it with a few
hundred concurrent requests, kills the server by its PID (SIGKILL) in the middle of a burst,
keeps the load on while it is down and starts it again on the same port. Rate limits fall back
to per-process counts and come back shared; only the feature reads answer 503, as documented.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from levibot.messages import Features, SetKillSwitch
from levibot.testing import free_port
from tests.integration.redis_server import TempRedis
from tests.unit.test_gateway_support import Harness, running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BURST = 300  # requests per phase
CONCURRENCY = 48  # requests in flight at once
Result = tuple[str, str, int, dict[str, Any]]  # (phase, route, status, body)


@pytest.fixture
async def redis_server() -> AsyncIterator[TempRedis]:
    server = TempRedis()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _request(i: int, keys: Harness) -> tuple[str, str, str | None, dict[str, Any] | None]:
    """The i-th request of a burst: (method, path, scope, JSON body)."""
    match i % 6:
        case 0:
            return "POST", "/killswitch", "admin", {"on": i % 12 == 0}
        case 1:
            return "GET", "/features/BTCUSDT", "read", None
        case 2:
            return "GET", "/risk", "read", None
        case 3:
            return "POST", "/orders", "trade", {"symbol": "BTCUSDT", "side": "buy"}
        case 4:
            return "POST", "/auth/token", None, {"api_key": keys.keys["read"]}  # limited by IP
        case _:
            return "GET", "/health", None, None


async def burst(
    phase: str, gateways: list[Harness], out: list[Result],
    on_progress: Callable[[int], None] = lambda done: None,
) -> None:  # fmt: skip
    """Send ``BURST`` requests spread over ``gateways``, ``CONCURRENCY`` at a time."""
    limiter = anyio.Semaphore(CONCURRENCY)
    done = 0
    latencies: list[float] = []

    async def one(i: int) -> None:
        nonlocal done
        method, path, scope, body = _request(i, gateways[0])
        g = gateways[i % len(gateways)]
        async with limiter:
            headers = gateways[0].h(scope) if scope else {}  # one key set for all
            sent = anyio.current_time()
            async with g.session.request(method, g.url + path, headers=headers, json=body) as r:
                text = await r.text()
            latencies.append(anyio.current_time() - sent)
        parsed = json.loads(text) if r.content_type == "application/json" else {}
        out.append((phase, f"{method} {path}", r.status, parsed))
        done += 1
        on_progress(done)

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for i in range(BURST):
            tg.start_soon(one, i)
    latencies.sort()
    print(  # figures for the record, not asserted: the machine's load decides them
        f"{phase}: {BURST} requests in {anyio.current_time() - started:.2f} s, latency p50 "
        f"{latencies[BURST // 2] * 1e3:.1f} ms p99 {latencies[BURST * 99 // 100] * 1e3:.1f} ms"
    )


async def call(g: Harness, method: str, path: str, scope: str, body: Any = None) -> tuple[int, Any]:
    """Send one request with the key of ``scope``; return the status and the JSON body."""
    async with g.session.request(method, g.url + path, headers=g.h(scope), json=body) as r:
        return r.status, await r.json()


async def statuses(
    g: Harness, n: int, scope: str = "read", keys: Harness | None = None
) -> list[int]:
    """GET /risk ``n`` times with the ``scope`` key of ``keys`` (default ``g``'s)."""
    got = []
    for _ in range(n):
        async with g.session.get(g.url + "/risk", headers=(keys or g).h(scope)) as r:
            got.append(r.status)
    return got


async def until_shared(*gateways: Harness) -> None:
    """Drive requests until every gateway's breaker has found Redis again."""
    for g in gateways:

        async def probe(g: Harness = g) -> bool:
            await statuses(g, 1, "admin")
            return bool(g.services.breaker.up)

        deadline = anyio.current_time() + 20
        while not await probe():
            assert anyio.current_time() < deadline, "the gateway never reconnected to Redis"
            await anyio.sleep(0.05)


async def until_noticed(*gateways: Harness) -> None:
    """Drive requests until every gateway's breaker has found Redis down.

    A gateway whose rate-limit shares all hold hears from Redis only through its check, at
    most every ``check_s`` (0.1 s) of traffic; the rest of the kill burst can fit inside that,
    e.g. when a ping answered just before the kill is read after it. The down phase starts
    once both know, so each of them must fall back there.
    """
    for g in gateways:
        deadline = anyio.current_time() + 5
        while g.services.breaker.up:
            assert anyio.current_time() < deadline, "the gateway never noticed Redis was down"
            await statuses(g, 1)
            await anyio.sleep(0.02)


async def test_gateway_survives_redis_killed_under_load_and_shares_limits_again(
    tmp_path: Path, redis_server: TempRedis
) -> None:
    # A killed Redis refuses at once; the generous per-call timeout only keeps a slow call on
    # a loaded machine (four gateways and a burst in one loop) from reading as an outage.
    common = {"redis_url": redis_server.url, "redis_retry_max_s": 0.5, "redis_timeout_s": 5.0}
    load = common | {"redis_prefix": "load", "rate_limit_per_ip": 10**6,
                     "rate_limit_per_key": 10**6}  # fmt: skip
    tight = common | {
        "redis_prefix": "tight",
        "rate_limit_per_key": 4,
        "rate_limit_window_s": 86_400.0,
    }  # one window for the whole test
    results: list[Result] = []
    with structlog.testing.capture_logs() as logs:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(running_gateway(tmp_path, **load))
            b = await stack.enter_async_context(running_gateway(tmp_path, **load))
            c = await stack.enter_async_context(running_gateway(tmp_path, **tight))
            d = await stack.enter_async_context(running_gateway(tmp_path, **tight))
            store = a.services.feature_store
            features = Features(ts_event=7, ts_init=7, symbol="BTCUSDT", schema_hash="h",
                                values=(0.25,), price=42.0)  # fmt: skip
            await store.put(features)

            # Shared: c and d count one key together (4 allowed in all).
            assert [(await statuses(g, 1, keys=c))[0] for g in (c, d, c, d, c)] == [200] * 4 + [429]
            await burst("before", [a, b], results)

            def kill_at_a_third(done: int) -> None:
                if done == BURST // 3:
                    redis_server.kill()

            await burst("kill", [a, b], results, kill_at_a_third)
            assert redis_server.proc is None
            await until_noticed(a, b)
            probes_before = a.services.breaker.probes
            await burst("down", [a, b], results)
            down_probes = a.services.breaker.probes - probes_before
            # Per process while Redis is down: each gateway lets 4 through on its own.
            assert await statuses(c, 5) == [200] * 4 + [429]
            assert await statuses(d, 5, keys=c) == [200] * 4 + [429]

            redis_server.start()  # same port, empty: the feature actor writes again
            await until_shared(a, b, c, d)
            await store.put(features)
            await burst("after", [a, b], results)
            # Shared again: c's and d's local counts are spent, yet Redis (fresh) lets 4
            # through, and the fifth is refused though neither gateway saw more than three.
            assert [(await statuses(g, 1, keys=c))[0] for g in (c, d, c, d, c)] == [200] * 4 + [429]

            fallbacks = [g.ctx.metrics.value("gateway_ratelimit_fallback_total") for g in (a, b)]
            outages = [g.ctx.metrics.value("gateway_redis_outages_total") for g in (a, b, c, d)]
            kills = sum(len(g.ctx.of_type(SetKillSwitch)) for g in (a, b))
            metrics_text = a.services.metrics.render()

    histogram = Tally((phase, route, status) for phase, route, status, _ in results)
    print("\nredis outage:", {p: sum(1 for r in results if r[0] == p) for p in
                               ("before", "kill", "down", "after")})  # fmt: skip
    for key in sorted(histogram):
        print("  ", key, histogram[key])
    print("   fallback requests", fallbacks, "probes while down", down_probes)

    assert len(results) == 4 * BURST
    for phase, route, status, body in results:
        if route == "GET /features/BTCUSDT" and status == 503:
            assert phase in ("kill", "down"), (phase, body)
            assert body["error"]["code"] == "feature_store_unavailable"
            continue
        assert 200 <= status < 300, (phase, route, status, body)
    by_phase = Tally((phase, route, status) for phase, route, status, _ in results)
    each = BURST // 6  # requests of each route per phase
    assert by_phase["down", "GET /features/BTCUSDT", 503] == each
    assert by_phase["after", "GET /features/BTCUSDT", 200] == each
    assert by_phase["down", "POST /killswitch", 202] == each
    assert kills == 4 * each  # every kill switch command was published
    # Counted, exported, and logged once per outage and once per reconnect, not per request.
    assert all(f > 0 for f in fallbacks) and outages == [1.0] * 4
    assert "gateway_redis_up 1" in metrics_text
    down = [e for e in logs if e["event"] == "gateway.redis_down"]
    back = [e for e in logs if e["event"] == "gateway.redis_reconnected"]
    assert (len(down), len(back)) == (4, 4), [e["event"] for e in logs]
    # No Redis round trip per request while it is down: a few probes, not one per request.
    assert down_probes * 10 < BURST, down_probes


async def test_gateway_starts_and_serves_with_redis_down(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with running_gateway(tmp_path, redis_url=dead, rate_limit_per_key=2) as g:
        assert (await call(g, "POST", "/killswitch", "admin", {"on": True}))[0] == 202
        assert (await call(g, "GET", "/risk", "read"))[0] == 200
        status, body = await call(g, "GET", "/features/BTCUSDT", "read")
        assert (status, body["error"]["code"]) == (503, "feature_store_unavailable")
        assert (await call(g, "GET", "/risk", "read"))[0] == 429  # limits still hold, locally
        assert g.services.breaker.outages == 1 and len(g.ctx.of_type(SetKillSwitch)) == 1

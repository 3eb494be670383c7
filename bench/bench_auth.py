"""What shared auth state costs a request: embedded (keys.json, tokens in memory) vs PostgreSQL.

One gateway per mode runs here (the real ``GatewayActor``); the load comes from
``bench/gateway_load.py`` in a separate process. Rows, each ``GET`` with ``--concurrency``
connections for ``--seconds``, median of ``--rounds``:

- ``<mode>.health``: no auth, the baseline of the same server;
- ``<mode>.key``: ``GET /risk`` with ``X-API-Key`` (a key lookup: file or one PostgreSQL row);
- ``<mode>.bearer``: ``GET /risk`` with an access token (its family's revocation, in memory or
  one PostgreSQL row, plus the key behind it).

``ratio`` is requests/s against the same server's ``health`` row, so the modes compare without
trusting absolute numbers on a shared machine.

Run: ``.venv/bin/python bench/bench_auth.py [--rounds 3 --seconds 1]``; needs the PostgreSQL
test server (``LEVIBOT_TEST_PG_DSN``); writes ``bench/results/auth.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from levibot.clock import LiveClock
from levibot.storage.migrate import migrate
from levibot.storage.testing import temp_database
from levibot.testing import RecordingContext
from sidecars.gateway.actor import GatewayActor, GatewayConfig
from sidecars.gateway.auth import new_key

LOAD = Path(__file__).with_name("gateway_load.py")
RESULTS = Path(__file__).with_name("results") / "auth.json"


async def _load(port: int, key: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    out = await anyio.run_process([
        sys.executable, str(LOAD), "rest", "--url", f"http://127.0.0.1:{port}{path}",
        "--key", key, "--concurrency", str(args.concurrency), "--seconds", str(args.seconds),
    ])  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


async def _mode(name: str, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = GatewayConfig(
            port=0, data_dir=tmp, postgres_dsn=dsn, jwt_secret="bench-" + "x" * 32,
            heartbeat_s=0.0, rate_limit_per_ip=10**9, rate_limit_per_key=10**9,
        )  # fmt: skip
        actor = GatewayActor(RecordingContext("gateway", clock=LiveClock()), config)
        await actor.on_start()
        try:
            assert actor.services is not None
            plain, record = new_key("bench", ["read"])
            await actor.services.auth.keys.add(record)
            pair = await actor.services.ledger.issue(record.key_id, record.scopes)
            creds = {"health": ("/health", plain), "key": ("/risk", plain),
                     "bearer": ("/risk", f"Bearer {pair.access_token}")}  # fmt: skip
            runs: dict[str, list[dict[str, Any]]] = {row: [] for row in creds}
            for _ in range(args.rounds):
                for row, (path, cred) in creds.items():
                    runs[row].append(await _load(actor.port, cred, path, args))
        finally:
            await actor.on_stop()
    rows = {
        f"{name}.{row}": {k: statistics.median(r[k] for r in got) for k in got[0]}
        for row, got in runs.items()
    }
    base = rows[f"{name}.health"]["rps"]
    for stats in rows.values():
        stats["ratio"] = stats["rps"] / base
        assert stats["errors"] == 0, stats  # a refused request would measure the wrong path
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    results.update(await _mode("embedded", "", args))
    async with temp_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        results.update(await _mode("postgres", dsn, args))
    return {
        "machine": {"python": platform.python_version(), "arch": platform.machine()},
        "params": vars(args),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = anyio.run(run, args, backend_options={"use_uvloop": True})
    report["wall_s"] = time.perf_counter() - t0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"{'row':<18}{'rate':>14}{'ratio':>8}{'p50 µs':>10}{'p99 µs':>10}")
    for name, r in report["results"].items():
        print(f"{name:<18}{r['rps']:>10.0f} r/s{r['ratio']:>8.2f}"
              f"{r['p50_us']:>10.0f}{r['p99_us']:>10.0f}")  # fmt: skip
    print(f"wall {report['wall_s']:.1f} s")


if __name__ == "__main__":
    main()

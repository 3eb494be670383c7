"""The shared model registry's costs: PostgreSQL against the local folder, in the same run.

What a process pays for the registry every process shares: opening it (a pool; the tables
exist), reading the active pointer (what ``POST /predict`` does per request), moving it
(``activate``: a transaction under the pointer lock), and fetching a model's files into an empty
cache (a scoring pod's or a fresh gateway's first load). Each figure is the median of repeated
runs; the folder registry is measured beside it as the baseline. Uses a throwaway database on
the test server (``LEVIBOT_TEST_PG_DSN``).

    .venv/bin/python bench/bench_registry.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HASH = "feedfacecafebeef"


async def median_ms(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


async def measure(kind: str, dsn: str, tmp: Path, repeat: int) -> dict[str, float]:
    from levibot.ml.registries import open_registry

    root = tmp / kind
    dsn = dsn if kind == "postgres" else ""
    store = await open_registry(root / "writer", dsn=dsn, schema_hash=HASH)
    for mid in ("a", "b"):
        await store.register(tmp / "build" / mid)
    await store.activate("a")
    out: dict[str, float] = {}

    async def open_close() -> None:
        s = await open_registry(root / "other", dsn=dsn, schema_hash=HASH)
        await s.close()

    out["open"] = await median_ms(open_close, repeat)
    out["active"] = await median_ms(store.active, repeat * 10)
    flip = iter(("b", "a") * repeat * 5)
    out["activate"] = await median_ms(lambda: store.activate(next(flip)), repeat * 4)
    if kind == "postgres":
        n = iter(range(repeat))

        async def cold_fetch() -> None:
            s = await open_registry(root / f"cold{next(n)}", dsn=dsn, schema_hash=HASH)
            try:
                await s.path("b")
            finally:
                await s.close()

        out["open+fetch"] = await median_ms(cold_fetch, repeat)
    await store.close()
    return out


async def main(repeat: int) -> None:
    from levibot.features import SCHEMA
    from levibot.ml.testing import make_model
    from levibot.storage.testing import temp_database

    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    try:
        k = len(SCHEMA.names)
        for mid in ("a", "b"):  # the size `levibot train` makes: 200 trees
            make_model(tmp / "build" / mid, model_id=mid, schema_hash=HASH, schema_size=k,
                       columns=(0, 1), trees=200, rows=4000)  # fmt: skip
        size = sum(f.stat().st_size for f in (tmp / "build" / "a").iterdir())
        async with temp_database() as dsn:
            rows = {k: await measure(k, dsn, tmp, repeat) for k in ("folder", "postgres")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model files: {size / 1e6:.2f} MB; medians of {repeat}+ runs, ms")
    print(f"{'':<12}{'folder':>10}{'postgres':>10}")
    for key in ("open", "active", "activate", "open+fetch"):
        f, p = rows["folder"].get(key), rows["postgres"].get(key)
        print(f"{key:<12}{'-' if f is None else f'{f:.3f}':>10}{p:>10.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    asyncio.run(main(parser.parse_args().repeat))

"""Our tick→bar aggregation equals PostgreSQL's ``date_bin`` + first/last over the same ticks."""

from __future__ import annotations

import itertools
import random
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from levibot.marketdata.bars import BarAggregator
from levibot.messages import Tick
from levibot.testenv import PG_DSN

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DSN = PG_DSN
S = 1_000_000_000
T0 = 1_700_000_000 * S + 123_456_000  # not on a bucket boundary
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def make_ticks(n: int, seed: int) -> list[tuple[int, float, float]]:
    """Return (ts ns, price, size), µs-aligned (PostgreSQL keeps µs), with bursts and gaps."""
    rng = random.Random(seed)
    ts, out = T0, []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            step = 0  # same timestamp as the previous tick: order must follow insertion
        elif r < 0.97:
            step = int(rng.expovariate(1 / 0.4) * 1e6) * 1_000
        else:
            step = rng.randint(61, 400) * S  # empty buckets in every timeframe
        ts += step
        out.append((ts, round(rng.uniform(20_000, 21_000), 2), round(rng.expovariate(2.0), 6)))
    return out


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(DSN)
    schema = f"feed_bars_{uuid.uuid4().hex[:12]}"
    await connection.execute(f"CREATE SCHEMA {schema}")
    await connection.execute(f"SET search_path TO {schema}")
    await connection.execute("SET TIME ZONE 'Asia/Kolkata'")  # origin must not depend on it
    try:
        yield connection
    finally:
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
        await connection.close()


QUERY = """
SELECT (extract(epoch FROM date_bin($1::interval, ts, '1970-01-01 00:00:00+00')) * 1000000)::bigint
         AS start_us,
       (array_agg(price ORDER BY ts, id))[1] AS open,
       max(price) AS high,
       min(price) AS low,
       (array_agg(price ORDER BY ts DESC, id DESC))[1] AS close,
       sum(size) AS volume,
       count(*) AS trades
FROM ticks
GROUP BY 1
ORDER BY 1
"""


@pytest.mark.parametrize(("timeframe", "interval"), [("1s", timedelta(seconds=1)),
                                                     ("5s", timedelta(seconds=5)),
                                                     ("1m", timedelta(minutes=1))])  # fmt: skip
async def test_bars_equal_postgres_date_bin_with_first_and_last_by_time(
    conn: asyncpg.Connection, timeframe: str, interval: timedelta
) -> None:
    ticks = make_ticks(4_000, seed=zlib.crc32(timeframe.encode()))
    await conn.execute(
        "CREATE TABLE ticks (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, "
        "price float8 NOT NULL, size float8 NOT NULL)"
    )
    await conn.copy_records_to_table(
        "ticks",
        records=[(EPOCH + timedelta(microseconds=ts // 1_000), p, s) for ts, p, s in ticks],
        columns=["ts", "price", "size"],
    )
    expected = await conn.fetch(QUERY, interval)

    agg = BarAggregator([timeframe])
    bars = []
    for ts, price, size in ticks:
        t = Tick(ts_event=ts, ts_init=ts, symbol="BTCUSDT", venue="TEST", price=price, size=size)
        bars += agg.on_tick(t, ts)
    bars += agg.flush(ticks[-1][0])

    assert len(bars) == len(expected) > 100
    assert agg.late == 0
    for bar, row in zip(bars, expected, strict=True):
        assert bar.start == row["start_us"] * 1_000
        assert (bar.open, bar.high, bar.low, bar.close, bar.trades) == (
            row["open"], row["high"], row["low"], row["close"], row["trades"],
        )  # fmt: skip
        # sum() order inside PostgreSQL is not ours: equal to the last few ulps.
        assert bar.volume == pytest.approx(row["volume"], rel=1e-12, abs=1e-12)
    # The gaps we made are in both, as missing buckets rather than invented bars.
    starts = [b.start for b in bars]
    assert max(b - a for a, b in itertools.pairwise(starts)) > 60 * S

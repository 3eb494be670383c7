"""The Binance client choice, measured: levibot's direct aiohttp client against ccxt.

Both place the same signed LIMIT orders against the local stand-in (tests/fakes/binance_spot.py,
real HTTP on the loopback, signatures verified), one at a time; the figures are medians of
``--orders`` orders. Also measured: the import time, the start (levibot: server time and
exchangeInfo of one symbol; ccxt: ``load_markets``) and the CPU cost of signing one request.
ccxt runs in its own interpreter (``--ccxt-python``, a venv with ccxt installed), talking to
the same stand-in, so it is not a dependency of levibot.

    .venv/bin/python -m bench.bench_binance_client --ccxt-python /tmp/ccxtenv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

KEY, SECRET = "bench-key", "bench-secret"
PROBE = Path(__file__).with_name("binance_ccxt_probe.py")


async def ours(rest: str, n: int) -> dict[str, float]:
    t = time.perf_counter()
    from levibot.execution.binance import BinanceSpotClient, signed_query

    import_s = time.perf_counter() - t
    async with BinanceSpotClient(rest, KEY, SECRET) as client:
        t = time.perf_counter()
        await client.sync_time()
        await client.exchange_info(("BTCUSDT",))
        start_s = time.perf_counter() - t
        lat = []
        for i in range(n):
            t = time.perf_counter()
            await client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                   timeInForce="GTC", quantity="0.2",
                                   price=f"{50 + (i % 50) * 0.01:.2f}",
                                   newClientOrderId=f"o{i}")  # fmt: skip
            lat.append(time.perf_counter() - t)
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.001",
              "price": "50", "timeInForce": "GTC", "recvWindow": 5000, "timestamp": 1}  # fmt: skip
    sign = []
    for _ in range(2000):
        t = time.perf_counter()
        signed_query(SECRET, params)
        sign.append(time.perf_counter() - t)
    return {
        "import_s": import_s,
        "load_markets_s": start_s,
        "order_ms": statistics.median(lat) * 1e3,
        "sign_us": statistics.median(sign) * 1e6,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--ccxt-python", default="")
    args = ap.parse_args()
    from tests.fakes.binance_spot import BinanceSpot, rules, serving

    spot = BinanceSpot(api_key=KEY, api_secret=SECRET, weight_limit=10**9)
    spot.symbols["BTCUSDT"] = rules("BTCUSDT", "BTC", "USDT")
    spot.balances["USDT"] = [Decimal("1e9"), Decimal(0)]
    spot.price["BTCUSDT"] = 100.0
    async with serving(spot) as (rest, _):
        rows = {"levibot (aiohttp)": await ours(rest, args.orders)}
        if args.ccxt_python:
            proc = await asyncio.create_subprocess_exec(
                args.ccxt_python, str(PROBE), rest, KEY, SECRET, str(args.orders),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            if proc.returncode != 0:
                sys.exit(f"ccxt probe failed: {err.decode()[-2000:]}")
            rows["ccxt (async)"] = json.loads(out)
    print(f"{'client':20} {'import s':>9} {'start s':>9} {'order ms':>9} {'sign us':>8}")
    for name, r in rows.items():
        print(f"{name:20} {r['import_s']:9.3f} {r['load_markets_s']:9.3f} {r['order_ms']:9.3f} "
              f"{r['sign_us']:8.1f}")  # fmt: skip
    base = rows["levibot (aiohttp)"]
    for name, r in rows.items():
        if r is not base:
            print(f"{name}: order latency x{r['order_ms'] / base['order_ms']:.2f}, "
                  f"import x{r['import_s'] / base['import_s']:.1f}, "
                  f"signing x{r['sign_us'] / base['sign_us']:.1f}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

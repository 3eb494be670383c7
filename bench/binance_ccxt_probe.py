"""Run by bench_binance_client in an interpreter with ccxt: ccxt's side of the measurement."""

import asyncio
import json
import statistics
import sys
import time

t0 = time.perf_counter()
import ccxt.async_support as ccxt  # noqa: E402 - its import is measured

import_s = time.perf_counter() - t0
rest, key, secret, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


async def main():
    ex = ccxt.binance({"apiKey": key, "secret": secret, "enableRateLimit": False})
    for k in ("public", "private", "v1"):
        ex.urls["api"][k] = rest + "/api/v3"
    ex.options["fetchMarkets"] = {"types": ["spot"]}
    ex.options["fetchCurrencies"] = False
    ex.options["fetchMargins"] = False
    ex.has["fetchCurrencies"] = False
    try:
        t = time.perf_counter()
        await ex.load_markets()
        load_s = time.perf_counter() - t
        lat = []
        for i in range(n):
            t = time.perf_counter()
            await ex.create_order("BTC/USDT", "limit", "buy", 0.2, 50.0 + (i % 50) * 0.01)
            lat.append(time.perf_counter() - t)
        sign = []
        for _ in range(2000):
            t = time.perf_counter()
            ex.sign(
                "order",
                ["private"],
                "POST",
                {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "quantity": "0.2",
                    "price": "50",
                    "timeInForce": "GTC",
                },
            )
            sign.append(time.perf_counter() - t)
        print(
            json.dumps(
                {
                    "import_s": import_s,
                    "load_markets_s": load_s,
                    "order_ms": statistics.median(lat) * 1e3,
                    "sign_us": statistics.median(sign) * 1e6,
                }
            )
        )
    finally:
        await ex.close()


asyncio.run(main())

"""A local stand-in for Binance spot's public ``GET /api/v3/klines``, over real HTTP.

It serves klines from in-memory OHLCV arrays the way the documentation describes: rows
``[open time ms, "open", "high", "low", "close", "volume", close time ms, "quote volume",
trades, "taker buy base", "taker buy quote", "0"]`` oldest first; ``limit`` default 500, at
most 1,000; with ``endTime`` the most recent klines up to it, with ``startTime`` the oldest
from it; an unknown symbol is ``400 {"code": -1121, "msg": "Invalid symbol."}``. Every answer
carries ``X-MBX-USED-WEIGHT-1M`` (2 per klines request). ``refuse`` makes the next requests
answer ``429`` with ``Retry-After``; ``garbage`` makes them answer non-JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}


@dataclass
class Series:
    """One symbol's klines: open times in ns and OHLCV arrays."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@dataclass
class BinanceRest:
    """The stand-in's state: the data it serves and what it was asked."""

    series: dict[str, Series] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    weight: int = 0
    refuse: int = 0  # answer this many next requests with 429
    retry_after: str = "0"
    garbage: int = 0  # answer this many next requests with non-JSON

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/klines", self.klines)
        return app

    async def klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append(q)
        self.weight += 2
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.weight)}
        if self.refuse > 0:
            self.refuse -= 1
            return _error(
                429, -1003, "Too many requests.", headers | {"Retry-After": self.retry_after}
            )
        if self.garbage > 0:
            self.garbage -= 1
            return web.Response(text="<html>502 Bad Gateway</html>", status=200, headers=headers)
        s = self.series.get(q.get("symbol", ""))
        if s is None:
            return _error(400, -1121, "Invalid symbol.", headers)
        step = INTERVALS_MS.get(q.get("interval", ""))
        if step is None:
            return _error(400, -1120, "Invalid interval.", headers)
        limit = int(q.get("limit", "500"))
        if not 1 <= limit <= 1000:
            return _error(400, -1130, "Invalid data sent for a parameter.", headers)
        open_ms = s.ts // 1_000_000
        rows = np.arange(len(open_ms))
        if "startTime" in q:
            rows = rows[open_ms[rows] >= int(q["startTime"])]
        if "endTime" in q:
            rows = rows[open_ms[rows] <= int(q["endTime"])]
        rows = rows[:limit] if "startTime" in q else rows[-limit:]
        body = [
            [int(open_ms[i]), f"{s.open[i]:.8f}", f"{s.high[i]:.8f}", f"{s.low[i]:.8f}",
             f"{s.close[i]:.8f}", f"{s.volume[i]:.8f}", int(open_ms[i]) + step - 1, "0.0", 7,
             "0.0", "0.0", "0"]
            for i in rows.tolist()
        ]  # fmt: skip
        return web.Response(text=json.dumps(body), content_type="application/json", headers=headers)


def _error(status: int, code: int, msg: str, headers: dict[str, Any]) -> web.Response:
    return web.Response(
        text=json.dumps({"code": code, "msg": msg}), status=status,
        content_type="application/json", headers=headers,
    )  # fmt: skip

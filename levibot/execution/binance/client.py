"""A direct async client for Binance spot's REST API on aiohttp: signed, weight-aware.

- Signed endpoints carry ``timestamp`` (local time plus the measured server-time offset),
  ``recvWindow`` and ``signature`` (HMAC-SHA256 of the query string, see ``signing``), and the
  key in ``X-MBX-APIKEY``. A ``-1021`` (timestamp outside the window) re-measures the offset
  and retries once.
- Request weight: every answer's ``X-MBX-USED-WEIGHT-1M`` is kept; a request that would take
  the minute's use past ``headroom`` of the limit (``exchangeInfo``'s ``REQUEST_WEIGHT``) waits
  for the next minute instead of earning a ``429``. Requests in flight count too (their weight
  is reserved before they are sent), so concurrent requests cannot all pass one check.
- ``429`` (too many requests) and ``418`` (IP banned after ignoring 429s) are waited out for
  ``Retry-After`` seconds (at least the backoff's wait) and retried, up to ``max_retries``; a
  wait longer than ``max_wait_s`` is not slept through but raised (``RateLimited``). Retrying
  an order is safe: its ``newClientOrderId`` is idempotent at the venue.
- Errors come back as ``BinanceError`` with Binance's ``code`` and ``msg``; the key and the
  secret never appear in a message or a log (only the query string's public part does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from levibot.backoff import Backoff
from levibot.execution.binance.filters import SymbolRules
from levibot.execution.binance.signing import encode_query, signed_query

__all__ = ["BinanceError", "BinanceSpotClient", "RateLimited"]


class BinanceError(Exception):
    """An error answer: the HTTP status and Binance's code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"binance {status} {code}: {msg}")
        self.status, self.code, self.msg = status, code, msg


class RateLimited(BinanceError):
    """A 429/418 that outlasted the retries, or asked for a wait longer than allowed."""

    def __init__(self, status: int, code: int, msg: str, retry_after_s: float) -> None:
        super().__init__(status, code, msg)
        self.retry_after_s = retry_after_s


class BinanceSpotClient:
    """Binance spot REST: market data, orders, account and the user-data listen key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        recv_window_ms: int = 5000,
        weight_limit: int = 6000,
        headroom: float = 0.9,
        max_retries: int = 3,
        max_wait_s: float = 60.0,
        timeout_s: float = 10.0,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._secret = api_secret
        self.recv_window_ms = recv_window_ms
        self.weight_limit = weight_limit
        self.headroom = headroom
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._now_ms = now_ms
        self._sleep = sleep
        self.offset_ms = 0  # server time - local time
        self.used_weight = 0
        self._weight_minute = -1  # the server minute ``used_weight`` counts
        self._inflight: dict[int, int] = {}  # minute → weight of requests sent, not answered
        self._after_wait = -1  # the minute a wait for the next minute ended in
        self.waited_s = 0.0  # total time spent waiting for rate limits (for tests and metrics)
        self.retries = 0
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never the key or the secret
        return f"BinanceSpotClient({self.base_url!r})"

    # ---- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> BinanceSpotClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the HTTP session and measure the server-time offset."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        await self.sync_time()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def sync_time(self) -> int:
        """Measure ``offset_ms`` (server minus local, at the request's midpoint) and return it."""
        t0 = self._now_ms()
        body = await self.request("GET", "/api/v3/time", weight=1)
        t1 = self._now_ms()
        self.offset_ms = int(body["serverTime"]) - (t0 + t1) // 2
        return self.offset_ms

    def server_ms(self) -> int:
        """Return the server's time now, as far as the offset knows."""
        return self._now_ms() + self.offset_ms

    # ---- the one request path --------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        signed: bool = False,
        keyed: bool = False,
        weight: int = 1,
    ) -> Any:
        """Send one request and return its decoded JSON; retry 429/418 and a stale timestamp."""
        backoff = Backoff(0.5, self.max_wait_s)
        resynced = False
        attempt = 0
        while True:
            minute = await self._reserve(weight)
            try:
                query = self._query(params or {}, signed)
                status, headers, body = await self._send(method, path, query, signed or keyed)
                self._account(headers)
            finally:
                self._release(minute, weight)
            if status < 400:
                return body
            code, msg = _error(body)
            if status in (418, 429):
                wait = max(_retry_after(headers), backoff.next())
                if attempt >= self.max_retries or wait > self.max_wait_s:
                    raise RateLimited(status, code, msg, wait)
                attempt += 1
                self.retries += 1
                self.waited_s += wait
                await self._sleep(wait)
                continue
            if code == -1021 and signed and not resynced:
                resynced = True
                await self.sync_time()
                continue
            raise BinanceError(status, code, msg)

    def _query(self, params: dict[str, Any], signed: bool) -> str:
        if not signed:
            return encode_query(params)
        full = {**params, "recvWindow": self.recv_window_ms, "timestamp": self.server_ms()}
        return signed_query(self._secret, full)

    async def _send(self, method: str, path: str, query: str, keyed: bool) -> tuple[int, Any, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        headers = {"X-MBX-APIKEY": self._key} if keyed else {}
        # encoded=True: the URL goes out byte for byte as signed.
        async with self._session.request(method, URL(url, encoded=True), headers=headers) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = {"code": 0, "msg": f"not JSON: {text[:80]!r}"}
                if resp.status < 400:
                    raise BinanceError(resp.status, 0, body["msg"]) from None
            return resp.status, resp.headers, body

    async def _reserve(self, weight: int) -> int:
        """Take ``weight`` of the minute's headroom, waiting for the next minute when it would
        pass it; return the minute it was taken in (for ``_release``).

        What the last answer said was used, plus what requests in flight will use, is checked
        and the weight taken with no await in between, so concurrent requests cannot all pass
        one check. A request heavier than the headroom alone still goes, in a minute of its own.
        """
        cap = self.weight_limit * self.headroom
        while True:
            now = self.server_ms()
            minute = max(now // 60_000, self._after_wait)
            used = self.used_weight if minute == self._weight_minute else 0
            taken = used + self._inflight.get(minute, 0)
            if taken + weight <= cap or taken == 0:
                self._inflight[minute] = self._inflight.get(minute, 0) + weight
                return minute
            wait = max(((minute + 1) * 60_000 - now) / 1000 + 0.05, 0.05)
            self.waited_s += wait
            await self._sleep(wait)
            self._after_wait = minute + 1  # the server counts afresh (whatever the clock says)

    def _release(self, minute: int, weight: int) -> None:
        """The request taken in ``minute`` was answered (its weight is in the header now)."""
        left = self._inflight.get(minute, 0) - weight
        if left > 0:
            self._inflight[minute] = left
        else:
            self._inflight.pop(minute, None)

    def _account(self, headers: Any) -> None:
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
        if used is not None and str(used).isdigit():
            self.used_weight = int(used)
            self._weight_minute = self.server_ms() // 60_000

    # ---- endpoints -------------------------------------------------------------------------
    async def exchange_info(self, symbols: tuple[str, ...]) -> dict[str, SymbolRules]:
        """Return the trading rules of ``symbols`` and take the request-weight limit."""
        params = {"symbols": json.dumps(list(symbols), separators=(",", ":"))} if symbols else {}
        body = await self.request("GET", "/api/v3/exchangeInfo", params, weight=20)
        for limit in body.get("rateLimits", ()):
            if limit.get("rateLimitType") == "REQUEST_WEIGHT" and limit.get("interval") == (
                "MINUTE"
            ):
                self.weight_limit = int(limit["limit"]) // max(1, int(limit["intervalNum"]))
        return {s["symbol"]: SymbolRules.from_exchange_info(s) for s in body.get("symbols", ())}

    async def new_order(self, **params: Any) -> dict[str, Any]:
        """Place an order (``newOrderRespType=FULL``: the fills come with the answer)."""
        params.setdefault("newOrderRespType", "FULL")
        return await self.request("POST", "/api/v3/order", params, signed=True, weight=1)

    async def cancel_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        """Cancel an open order by its client order id."""
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        return await self.request("DELETE", "/api/v3/order", params, signed=True, weight=1)

    async def cancel_replace(self, **params: Any) -> dict[str, Any]:
        """Cancel an order and place another in one request (``/api/v3/order/cancelReplace``)."""
        params.setdefault("cancelReplaceMode", "STOP_ON_FAILURE")
        params.setdefault("newOrderRespType", "FULL")
        path = "/api/v3/order/cancelReplace"
        return await self.request("POST", path, params, signed=True, weight=1)

    async def get_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        """Return an order's status by its client order id."""
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        return await self.request("GET", "/api/v3/order", params, signed=True, weight=4)

    async def my_trades(self, symbol: str, order_id: int) -> list[dict[str, Any]]:
        """Return the trades of one order (its fills, with their fees)."""
        params = {"symbol": symbol, "orderId": order_id}
        return await self.request("GET", "/api/v3/myTrades", params, signed=True, weight=20)

    async def open_orders(self, symbol: str = "") -> list[dict[str, Any]]:
        """Return the open orders (of ``symbol``, or all: weight 80)."""
        params = {"symbol": symbol} if symbol else {}
        weight = 6 if symbol else 80
        return await self.request("GET", "/api/v3/openOrders", params, signed=True, weight=weight)

    async def account(self) -> dict[str, Any]:
        """Return the account, with its balances (``free`` and ``locked`` per asset)."""
        return await self.request("GET", "/api/v3/account", signed=True, weight=20)

    async def new_listen_key(self) -> str:
        """Open a user-data stream and return its listen key."""
        body = await self.request("POST", "/api/v3/userDataStream", keyed=True, weight=2)
        return str(body["listenKey"])

    async def keepalive(self, listen_key: str) -> None:
        """Extend a listen key's life by 60 minutes."""
        params = {"listenKey": listen_key}
        await self.request("PUT", "/api/v3/userDataStream", params, keyed=True, weight=2)

    async def close_listen_key(self, listen_key: str) -> None:
        """Close a user-data stream."""
        params = {"listenKey": listen_key}
        await self.request("DELETE", "/api/v3/userDataStream", params, keyed=True, weight=2)


def _error(body: Any) -> tuple[int, str]:
    if isinstance(body, dict):
        return int(body.get("code", 0) or 0), str(body.get("msg", ""))
    return 0, str(body)[:200]


def _retry_after(headers: Any) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0

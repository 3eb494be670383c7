"""A local stand-in for Binance spot's trading API: signed REST and the user-data websocket.

Over real HTTP (aiohttp), it speaks what the documentation describes for the endpoints levibot
uses: ``/api/v3/time``, ``exchangeInfo``, ``order`` (POST, DELETE, GET), ``order/cancelReplace``,
``openOrders``, ``account``, ``myTrades``, ``userDataStream`` (POST, PUT, DELETE) and the
websocket ``/ws/<listenKey>`` with ``executionReport`` and ``outboundAccountPosition`` events.

It verifies what a real server verifies: the ``X-MBX-APIKEY`` key (``-2015``), the signature,
HMAC-SHA256 of the raw query string (``-1022``), ``timestamp`` within ``recvWindow``
(``-1021``), the symbol's filters (``-1013``), balances (``-2010``) and a duplicate open client
order id (``-2010``). Every answer carries ``X-MBX-USED-WEIGHT-1M``.

The market is what the test says: ``price[symbol]`` is where a market order fills (in
``fill_parts`` equal trades, to show partial fills) and a marketable limit at once; ``trade()``
moves the price and fills resting limit orders that it crosses, up to a quantity. The fee is
``fee_rate`` of each trade, in the asset received (Binance's rule without BNB) or, with
``fee_in_quote``, in the quote asset. ``refuse``/``ban`` answer the next requests ``429``/``418``;
``drop_streams()`` closes every user-data websocket, as a network cut would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

D = Decimal


def rules(
    symbol: str,
    base: str,
    quote: str,
    *,
    tick: str = "0.01",
    step: str = "0.00001",
    min_qty: str = "0.00001",
    min_notional: str = "5",
) -> dict[str, Any]:
    """Return an ``exchangeInfo`` symbol entry with the usual spot filters."""
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
        "baseAssetPrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": "9000", "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": "100", "stepSize": "0"},
            {"filterType": "NOTIONAL", "minNotional": min_notional, "applyMinToMarket": True,
             "maxNotional": "9000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
    }  # fmt: skip


@dataclass
class Order:
    """One order at the stand-in."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    tif: str
    qty: Decimal
    price: Decimal
    time: int
    executed: Decimal = field(default_factory=Decimal)
    quote: Decimal = field(default_factory=Decimal)
    status: str = "NEW"

    def view(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_order_id, "price": str(self.price),
            "origQty": str(self.qty), "executedQty": str(self.executed),
            "cummulativeQuoteQty": str(self.quote), "status": self.status,
            "timeInForce": self.tif, "type": self.type, "side": self.side,
            "time": self.time, "updateTime": self.time, "isWorking": self.status == "NEW",
            "workingTime": self.time, "origQuoteOrderQty": "0.00000000",
        }  # fmt: skip


@dataclass
class BinanceSpot:
    """The stand-in's state: account, symbols, orders, streams, and what it was asked."""

    api_key: str
    api_secret: str
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, list[Decimal]] = field(default_factory=dict)  # asset -> [free, locked]
    price: dict[str, float] = field(default_factory=dict)
    fee_rate: Decimal = field(default_factory=lambda: D("0.001"))
    fee_in_quote: bool = False
    fill_parts: int = 1
    weight_limit: int = 6000
    clock_skew_ms: int = 0  # the server's clock ahead of ours
    refuse: int = 0  # answer this many next requests 429
    ban: int = 0  # answer this many next requests 418
    retry_after: str = "1"
    orders: dict[int, Order] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    listen_keys: dict[str, int] = field(default_factory=dict)  # key -> keepalives
    keys_made: int = 0  # listen keys ever created (closed ones included)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    weight: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _trade_ids: Any = field(default_factory=lambda: itertools.count(1001))

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v3/time", self.time)
        r.add_get("/api/v3/exchangeInfo", self.exchange_info)
        r.add_post("/api/v3/order", self.new_order)
        r.add_delete("/api/v3/order", self.cancel)
        r.add_get("/api/v3/order", self.get_order)
        r.add_post("/api/v3/order/cancelReplace", self.cancel_replace)
        r.add_get("/api/v3/openOrders", self.open_orders)
        r.add_get("/api/v3/account", self.account)
        r.add_get("/api/v3/myTrades", self.my_trades)
        r.add_post("/api/v3/userDataStream", self.listen_key)
        r.add_put("/api/v3/userDataStream", self.listen_key)
        r.add_delete("/api/v3/userDataStream", self.listen_key)
        r.add_get("/ws/{key}", self.stream)
        return app

    # ---- test controls ---------------------------------------------------------------------
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.clock_skew_ms

    def open(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")]

    def order(self, client_order_id: str) -> Order:
        return next(o for o in self.orders.values() if o.client_order_id == client_order_id)

    async def trade(self, symbol: str, price: float, qty: float | None = None) -> None:
        """Move the market to ``price``; fill crossing limit orders (up to ``qty`` in all)."""
        self.price[symbol] = price
        left = D(repr(qty)) if qty is not None else None
        for o in self.open():
            if o.symbol != symbol or o.type != "LIMIT":
                continue
            cross = (o.side == "BUY" and D(repr(price)) <= o.price) or (
                o.side == "SELL" and D(repr(price)) >= o.price
            )
            if not cross:
                continue
            take = o.qty - o.executed if left is None else min(left, o.qty - o.executed)
            if take <= 0:
                continue
            await self._execute(o, take, o.price)
            if left is not None:
                left -= take

    async def drop_streams(self) -> None:
        """Close every user-data websocket from the server's side."""
        for ws in list(self.sockets):
            await ws.close()
        self.sockets.clear()

    async def expire_listen_keys(self) -> None:
        """Expire every listen key (as after 60 minutes without keep-alive) and say so."""
        for ws in list(self.sockets):
            await ws.send_str(json.dumps({"e": "listenKeyExpired", "E": self.now_ms()}))
        self.listen_keys.clear()

    # ---- the request gate ------------------------------------------------------------------
    async def _gate(self, request: web.Request, weight: int, signed: bool, keyed: bool) -> Any:
        """Return the parameters, or a ``web.Response`` refusing the request."""
        # Parameters may come in the query string, the form body, or both; Binance signs their
        # concatenation ("totalParams": query string, then body).
        body = await request.text() if request.can_read_body else ""
        q = dict(request.query) | dict(parse_qsl(body, keep_blank_values=True))
        self.requests.append((request.method, request.path, q))
        self.weight += weight
        if self.ban > 0:
            self.ban -= 1
            return self._error(418, -1003, "Way too many requests; IP banned.",
                               {"Retry-After": self.retry_after})  # fmt: skip
        if self.refuse > 0 or self.weight > self.weight_limit:
            self.refuse = max(0, self.refuse - 1)
            return self._error(429, -1003, "Too many requests.", {"Retry-After": self.retry_after})
        if (keyed or signed) and request.headers.get("X-MBX-APIKEY") != self.api_key:
            return self._error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if signed:
            raw = request.query_string + body
            total, sep, signature = raw.rpartition("signature=")
            total = total.removesuffix("&")
            if "&" in signature:  # the signature first, the rest after it: not how it is done
                sep = ""
            want = hmac.new(self.api_secret.encode(), total.encode(), hashlib.sha256).hexdigest()
            if not sep or not hmac.compare_digest(signature, want):
                return self._error(400, -1022, "Signature for this request is not valid.")
            ts, window = int(q.get("timestamp", "0")), int(q.get("recvWindow", "5000"))
            now = self.now_ms()
            if ts > now + 1000 or now - ts > window:
                return self._error(
                    400, -1021, "Timestamp for this request is outside of the recvWindow."
                )
        return q

    def _error(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None
               ) -> web.Response:  # fmt: skip
        self.rejected.append((code, msg))
        return web.json_response({"code": code, "msg": msg}, status=status,
                                 headers=self._headers() | (headers or {}))  # fmt: skip

    def _headers(self) -> dict[str, str]:
        return {"X-MBX-USED-WEIGHT-1M": str(self.weight)}

    def _ok(self, body: Any) -> web.Response:
        return web.json_response(body, headers=self._headers())

    # ---- endpoints -------------------------------------------------------------------------
    async def time(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 1, False, False)
        return q if isinstance(q, web.Response) else self._ok({"serverTime": self.now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 20, False, False)
        if isinstance(q, web.Response):
            return q
        names = json.loads(q["symbols"]) if "symbols" in q else list(self.symbols)
        unknown = [n for n in names if n not in self.symbols]
        if unknown:
            return self._error(400, -1121, "Invalid symbol.")
        return self._ok({
            "timezone": "UTC", "serverTime": self.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
            ],
            "symbols": [self.symbols[n] for n in names],
        })  # fmt: skip

    async def new_order(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 1, True, True)
        if isinstance(q, web.Response):
            return q
        order, error = await self._place(q, q.get("newClientOrderId", ""))
        if error is not None:
            return error
        assert order is not None
        return self._ok(self._full(order))

    async def cancel(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 1, True, True)
        if isinstance(q, web.Response):
            return q
        return await self._cancel(q["symbol"], q.get("origClientOrderId", ""))

    async def get_order(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 4, True, True)
        if isinstance(q, web.Response):
            return q
        found = [
            o
            for o in self.orders.values()
            if o.client_order_id == q.get("origClientOrderId") and o.symbol == q["symbol"]
        ]
        if not found:
            return self._error(400, -2013, "Order does not exist.")
        return self._ok(found[-1].view())  # fmt: skip

    async def cancel_replace(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 1, True, True)
        if isinstance(q, web.Response):
            return q
        cancelled = await self._cancel(q["symbol"], q.get("cancelOrigClientOrderId", ""))
        if cancelled.status != 200:
            body = json.loads(cancelled.text or "{}")
            return web.json_response({
                "code": -2022, "msg": "Order cancel-replace failed.",
                "data": {"cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                         "cancelResponse": body, "newOrderResponse": None},
            }, status=400, headers=self._headers())  # fmt: skip
        order, error = await self._place(q, q.get("newClientOrderId", ""))
        if error is not None:
            return error
        assert order is not None
        return self._ok({
            "cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
            "cancelResponse": json.loads(cancelled.text or "{}"),
            "newOrderResponse": self._full(order),
        })  # fmt: skip

    async def open_orders(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        q = await self._gate(request, 6 if symbol else 80, True, True)
        if isinstance(q, web.Response):
            return q
        return self._ok([o.view() for o in self.open() if not symbol or o.symbol == symbol])

    async def account(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 20, True, True)
        if isinstance(q, web.Response):
            return q
        return self._ok({
            "makerCommission": 10, "takerCommission": 10, "canTrade": True,
            "accountType": "SPOT", "updateTime": self.now_ms(),
            "balances": [{"asset": a, "free": str(f), "locked": str(lk)}
                         for a, (f, lk) in sorted(self.balances.items())],
        })  # fmt: skip

    async def my_trades(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 20, True, True)
        if isinstance(q, web.Response):
            return q
        oid = int(q.get("orderId", "0"))
        sym = q["symbol"]
        return self._ok([t for t in self.trades if t["symbol"] == sym and t["orderId"] == oid])

    async def listen_key(self, request: web.Request) -> web.Response:
        q = await self._gate(request, 2, False, True)
        if isinstance(q, web.Response):
            return q
        if request.method == "POST":
            key = hashlib.sha256(f"{self.api_key}{len(self.listen_keys)}{time.time_ns()}".encode()
                                 ).hexdigest()[:60]  # fmt: skip
            self.listen_keys[key] = 0
            self.keys_made += 1
            return self._ok({"listenKey": key})
        key = q.get("listenKey", "")
        if key not in self.listen_keys:
            return self._error(400, -1125, "This listenKey does not exist.")
        if request.method == "PUT":
            self.listen_keys[key] += 1
        else:
            del self.listen_keys[key]
        return self._ok({})

    async def stream(self, request: web.Request) -> web.WebSocketResponse | web.Response:
        if request.match_info["key"] not in self.listen_keys:
            return web.Response(status=400, text="invalid listen key")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        if ws in self.sockets:
            self.sockets.remove(ws)
        return ws

    # ---- the matching engine ---------------------------------------------------------------
    async def _place(self, q: dict[str, str], coid: str) -> tuple[Order | None, Any]:
        symbol = q.get("symbol", "")
        info = self.symbols.get(symbol)
        if info is None:
            return None, self._error(400, -1121, "Invalid symbol.")
        if any(o.client_order_id == coid for o in self.open()):
            return None, self._error(400, -2010, "Duplicate order sent.")
        f = {x["filterType"]: x for x in info["filters"]}
        kind, side = q.get("type", ""), q.get("side", "")
        qty = D(q.get("quantity", "0"))
        market_price = D(repr(self.price.get(symbol, 0.0)))
        price = D(q["price"]) if kind == "LIMIT" else market_price
        step, tick = D(f["LOT_SIZE"]["stepSize"]), D(f["PRICE_FILTER"]["tickSize"])
        if qty < D(f["LOT_SIZE"]["minQty"]) or qty % step != 0:
            return None, self._error(400, -1013, "Filter failure: LOT_SIZE")
        if kind == "LIMIT" and price % tick != 0:
            return None, self._error(400, -1013, "Filter failure: PRICE_FILTER")
        if qty * price < D(f["NOTIONAL"]["minNotional"]):
            return None, self._error(400, -1013, "Filter failure: NOTIONAL")
        base, quote = info["baseAsset"], info["quoteAsset"]
        need_asset, need = (quote, qty * price) if side == "BUY" else (base, qty)
        if self.balances.get(need_asset, [D(0), D(0)])[0] < need:
            return None, self._error(
                400, -2010, "Account has insufficient balance for requested action."
            )
        order = Order(symbol, next(self._ids), coid, side, kind,
                      q.get("timeInForce", "GTC") if kind == "LIMIT" else "GTC",
                      qty, price if kind == "LIMIT" else D(0), self.now_ms())  # fmt: skip
        self.orders[order.order_id] = order
        self._move(need_asset, -need, +need)  # lock
        await self._report(order, "NEW")
        marketable = kind == "MARKET" or (
            market_price > 0
            and (market_price <= price if side == "BUY" else market_price >= price)
        )  # fmt: skip
        if marketable and market_price > 0:
            parts = max(1, self.fill_parts)
            chunk = (qty / parts).quantize(step, rounding="ROUND_FLOOR")
            for i in range(parts):
                take = chunk if i < parts - 1 else qty - order.executed
                if take > 0:
                    await self._execute(order, take, market_price)
        if order.status in ("NEW", "PARTIALLY_FILLED") and (
            kind == "MARKET" or order.tif in ("IOC", "FOK")
        ):
            await self._close(order, "EXPIRED")
        return order, None

    async def _execute(self, o: Order, qty: Decimal, price: Decimal) -> None:
        info = self.symbols[o.symbol]
        base, quote = info["baseAsset"], info["quoteAsset"]
        notional = qty * price
        if o.side == "BUY":
            fee_asset, fee = (
                (quote, notional * self.fee_rate)
                if self.fee_in_quote
                else (base, qty * self.fee_rate)
            )
            locked = qty * (o.price if o.type == "LIMIT" else price)
            self._move(quote, 0, -locked)
            self._move(quote, locked - notional, 0)
            self._move(base, qty, 0)
        else:
            fee_asset, fee = quote, notional * self.fee_rate
            self._move(base, 0, -qty)
            self._move(quote, notional, 0)
        self._move(fee_asset, -fee, 0)
        o.executed += qty
        o.quote += notional
        o.status = "FILLED" if o.executed >= o.qty else "PARTIALLY_FILLED"
        trade = {
            "symbol": o.symbol, "id": next(self._trade_ids), "orderId": o.order_id,
            "price": str(price), "qty": str(qty), "quoteQty": str(notional),
            "commission": str(fee), "commissionAsset": fee_asset, "time": self.now_ms(),
            "isBuyer": o.side == "BUY", "isMaker": o.type == "LIMIT", "isBestMatch": True,
        }  # fmt: skip
        self.trades.append(trade)
        await self._report(o, "TRADE", trade)

    async def _cancel(self, symbol: str, coid: str) -> web.Response:
        found = [o for o in self.open() if o.client_order_id == coid and o.symbol == symbol]
        if not found:
            return self._error(400, -2011, "Unknown order sent.")
        o = found[0]
        await self._close(o, "CANCELED")
        return self._ok(o.view() | {"origClientOrderId": coid})

    async def _close(self, o: Order, status: str) -> None:
        info = self.symbols[o.symbol]
        left = o.qty - o.executed
        if o.side == "BUY":
            unlock = left * (o.price if o.type == "LIMIT" else D(repr(self.price[o.symbol])))
            self._move(info["quoteAsset"], unlock, -unlock)
        else:
            self._move(info["baseAsset"], left, -left)
        o.status = status
        await self._report(o, status)

    def _move(self, asset: str, free: Decimal, locked: Decimal) -> None:
        row = self.balances.setdefault(asset, [D(0), D(0)])
        row[0] += free
        row[1] += locked

    def _full(self, o: Order) -> dict[str, Any]:
        fills = [{"price": t["price"], "qty": t["qty"], "commission": t["commission"],
                  "commissionAsset": t["commissionAsset"], "tradeId": t["id"]}
                 for t in self.trades if t["orderId"] == o.order_id]  # fmt: skip
        return o.view() | {"transactTime": o.time, "fills": fills}

    async def _report(self, o: Order, exec_type: str, trade: dict[str, Any] | None = None) -> None:
        event = {
            "e": "executionReport", "E": self.now_ms(), "s": o.symbol, "c": o.client_order_id,
            "S": o.side, "o": o.type, "f": o.tif, "q": str(o.qty), "p": str(o.price),
            "x": exec_type, "X": o.status, "r": "NONE", "i": o.order_id,
            "l": trade["qty"] if trade else "0", "z": str(o.executed),
            "L": trade["price"] if trade else "0", "n": trade["commission"] if trade else "0",
            "N": trade["commissionAsset"] if trade else None, "T": self.now_ms(),
            "t": trade["id"] if trade else -1, "Z": str(o.quote), "O": o.time,
        }  # fmt: skip
        if exec_type == "CANCELED":  # c: the cancel request's own id, C: the order's
            event |= {"c": f"cancel{next(self._ids)}", "C": o.client_order_id}
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(json.dumps(event))
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def serving(spot: BinanceSpot) -> AsyncIterator[tuple[str, str]]:
    """Serve ``spot`` on a free loopback port; yield ``(rest base URL, websocket base URL)``."""
    runner = web.AppRunner(spot.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    finally:
        await spot.drop_streams()
        await runner.cleanup()

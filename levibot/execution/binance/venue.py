"""The Binance spot venue: orders through the signed REST client, executions from the stream.

It turns the venue's answers into ``VenueEvent``s the order actor applies: ``Placed`` (the
venue took the order), ``Traded`` (one trade: a fill or part of one, its fee converted to the
quote asset), ``Ended`` (cancelled, expired or rejected by the venue) and ``Refused`` (never
sent: a filter, or the venue refused the request). It keeps no order state of its own: the actor
owns the open orders and persists them, so a restart loses nothing the venue still has.

- ``newClientOrderId`` is our client order id when Binance accepts it as one
  (``^[.A-Z:/a-z0-9_-]{1,36}$``), else ``lb-`` and 32 hex digits of its SHA-256: the same intent
  always maps to the same venue order, so a retried request cannot place a second one.
- Orders: an intent with a ``limit_price`` is a LIMIT order (``limit_tif``: GTC or IOC), any
  other a MARKET order. Quantities floor to the symbol's step, limit prices round to its tick
  (never to a worse price); an order below the minimum quantity or notional is refused here.
- Fees: Binance charges the asset received (base on a buy, quote on a sell) unless paid in
  another asset (BNB). A base fee on a buy reduces the quantity held and is valued at the trade
  price; another asset is valued at the last price the venue was told of (``mark``), else 0
  with a warning.
- The user-data stream (``run_stream``): a listen key, kept alive every ``keepalive_s``; on
  every (re)connect ``on_connect`` runs once the socket is open (reconciliation), so nothing
  that happens meanwhile falls between the two; a drop reconnects with the backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

from levibot.backoff import Backoff
from levibot.execution.binance.client import BinanceError, BinanceSpotClient
from levibot.execution.binance.config import BinanceConfig
from levibot.execution.binance.filters import FilterReject, SymbolRules, fmt
from levibot.messages import OrderIntent, Side

__all__ = [
    "BinanceVenue",
    "Ended",
    "Placed",
    "Refused",
    "Traded",
    "VenueEvent",
    "venue_order_id",
]

_VALID_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
MS = 1_000_000


def venue_order_id(client_order_id: str) -> str:
    """Return the ``newClientOrderId`` for our ``client_order_id`` (deterministic)."""
    if _VALID_ID.match(client_order_id):
        return client_order_id
    return "lb-" + hashlib.sha256(client_order_id.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Placed:
    """The venue took the order (``status`` NEW, PARTIALLY_FILLED, FILLED...)."""

    venue_id: str
    order_id: int
    status: str


@dataclass(frozen=True, slots=True)
class Traded:
    """One trade of an order; ``quantity`` is what the account holds for it, net of a base
    fee; ``fee`` is in the quote asset (``fee_amount`` in ``fee_asset`` as charged)."""

    venue_id: str
    trade_id: int
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    fee_amount: float
    fee_asset: str
    ts_ms: int
    done: bool = False  # the order is filled with this trade


@dataclass(frozen=True, slots=True)
class Ended:
    """The venue closed the order unfilled or part-filled: CANCELED, EXPIRED or REJECTED."""

    venue_id: str
    status: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """The order never reached the book: a filter here, or the venue's refusal."""

    venue_id: str
    why: str
    code: int = 0


VenueEvent = Placed | Traded | Ended | Refused
_OPEN = {"NEW", "PARTIALLY_FILLED", "PENDING_NEW"}


class BinanceVenue:
    """Binance spot behind the order actor."""

    def __init__(self, cfg: BinanceConfig, api_key: str, api_secret: str, *, log: Any) -> None:
        self.cfg = cfg
        self.client = BinanceSpotClient(
            cfg.base_url,
            api_key,
            api_secret,
            recv_window_ms=cfg.recv_window_ms,
            max_retries=cfg.max_retries,
            max_wait_s=cfg.max_wait_s,
            timeout_s=cfg.timeout_s,
        )
        self.log = log
        self.rules: dict[str, SymbolRules] = {}
        self.prices: dict[str, float] = {}
        self.connects = 0  # user-stream connections made (1 + reconnects)
        self.keepalives = 0
        self.listen_key = ""  # the user stream's current key, closed with the venue

    def __repr__(self) -> str:
        return f"BinanceVenue({self.cfg.base_url!r})"

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the client (server-time offset) and load the configured symbols' rules."""
        await self.client.open()
        if self.cfg.symbols:
            self.rules.update(await self.client.exchange_info(self.cfg.symbols))

    async def close(self) -> None:
        """Close the user stream's listen key (else it stays open for up to an hour), then
        the HTTP session. A venue that does not answer does not hold the stop up."""
        key, self.listen_key = self.listen_key, ""
        if key:
            try:
                await asyncio.wait_for(self.client.close_listen_key(key), self.cfg.timeout_s)
            except Exception as exc:  # stopping anyway: the key expires on its own
                self.log.warning("binance.listen_key_not_closed", error=str(exc)[:200])
        await self.client.close()

    async def rules_of(self, symbol: str) -> SymbolRules:
        """Return ``symbol``'s rules, loading them on first use."""
        if symbol not in self.rules:
            self.rules.update(await self.client.exchange_info((symbol,)))
        return self.rules[symbol]

    def mark(self, symbol: str, price: float) -> None:
        """Remember a market price (to value fees paid in a third asset)."""
        self.prices[symbol] = price

    # ---- orders ----------------------------------------------------------------------------
    def _order_params(self, intent: OrderIntent, rules: SymbolRules, venue_id: str) -> dict:
        side = "BUY" if intent.side is Side.BUY else "SELL"
        params: dict[str, Any] = {"symbol": intent.symbol, "side": side}
        if intent.limit_price > 0:
            price = rules.price(side, intent.limit_price)
            qty = rules.quantity(intent.quantity, market=False)
            rules.check_notional(qty, price, market=False)
            params |= {"type": "LIMIT", "timeInForce": self.cfg.limit_tif,
                       "quantity": fmt(qty), "price": fmt(price)}  # fmt: skip
        else:
            qty = rules.quantity(intent.quantity, market=True)
            ref = Decimal(repr(intent.price)) if intent.price > 0 else Decimal(0)
            rules.check_notional(qty, ref, market=True)
            params |= {"type": "MARKET", "quantity": fmt(qty)}
        params["newClientOrderId"] = venue_id
        return params

    async def submit(self, intent: OrderIntent, venue_id: str) -> list[VenueEvent]:
        """Send ``intent``; return what the answer says (placed, and any trades at once)."""
        try:
            rules = await self.rules_of(intent.symbol)
            params = self._order_params(intent, rules, venue_id)
        except FilterReject as exc:
            return [Refused(venue_id, f"filter {exc.filter}: {exc}")]
        except BinanceError as exc:
            return [Refused(venue_id, exc.msg, exc.code)]
        try:
            answer = await self.client.new_order(**params)
        except BinanceError as exc:
            if exc.code == -2010 and "Duplicate" in exc.msg:
                # Sent before (a retry after a lost answer): the venue's order is this one.
                return self.order_events(await self.client.get_order(intent.symbol, venue_id))
            return [Refused(venue_id, exc.msg, exc.code)]
        return self.order_events(answer)

    async def cancel(self, symbol: str, venue_id: str) -> list[VenueEvent]:
        """Cancel an open order; an order the venue no longer has comes back as its status."""
        try:
            answer = await self.client.cancel_order(symbol, venue_id)
        except BinanceError as exc:
            if exc.code not in (-2011, -2013):
                raise
            return self.order_events(await self.client.get_order(symbol, venue_id))
        return self.order_events(answer)

    async def replace(
        self, symbol: str, venue_id: str, intent: OrderIntent, new_venue_id: str
    ) -> list[VenueEvent]:
        """Cancel ``venue_id`` and place ``intent`` in one request (cancel-replace)."""
        try:
            rules = await self.rules_of(symbol)
            params = self._order_params(intent, rules, new_venue_id)
        except FilterReject as exc:
            return [Refused(new_venue_id, f"filter {exc.filter}: {exc}")]
        new_id = params.pop("newClientOrderId")
        try:
            answer = await self.client.cancel_replace(
                cancelOrigClientOrderId=venue_id, newClientOrderId=new_id, **params
            )
        except BinanceError as exc:
            return [Refused(new_venue_id, exc.msg, exc.code)]
        return self.order_events(answer["cancelResponse"]) + self.order_events(
            answer["newOrderResponse"]
        )

    async def status(self, symbol: str, venue_id: str) -> dict[str, Any] | None:
        """Return the venue's view of an order, or None when it never reached the venue."""
        try:
            return await self.client.get_order(symbol, venue_id)
        except BinanceError as exc:
            if exc.code == -2013:
                return None
            raise

    async def trades(self, symbol: str, venue_id: str, order_id: int) -> list[Traded]:
        """Return every trade of one order (to catch up on those a drop made us miss)."""
        rows = await self.client.my_trades(symbol, order_id)
        out = []
        for t in rows:
            side = Side.BUY if t.get("isBuyer") else Side.SELL
            out.append(
                self._traded(venue_id, int(t["id"]), symbol, side, t["qty"], t["price"],
                             t["commission"], t.get("commissionAsset") or "", int(t["time"]))
            )  # fmt: skip
        return out

    async def open_orders(self) -> list[dict[str, Any]]:
        """Return the venue's open orders (of the configured symbols, or all)."""
        if not self.cfg.symbols:
            return await self.client.open_orders()
        out: list[dict[str, Any]] = []
        for symbol in self.cfg.symbols:
            out += await self.client.open_orders(symbol)
        return out

    async def balances(self) -> dict[str, float]:
        """Return each asset's total (free + locked) balance."""
        account = await self.client.account()
        return {
            b["asset"]: float(b["free"]) + float(b["locked"]) for b in account.get("balances", ())
        }

    # ---- decoding --------------------------------------------------------------------------
    def order_events(self, order: dict[str, Any]) -> list[VenueEvent]:
        """Return the events of an order answer (new order, cancel, status; FULL fills)."""
        vid = order.get("clientOrderId", "")
        if order.get("origClientOrderId"):  # a cancel's answer names the cancelled order so
            vid = order["origClientOrderId"]
        status = order.get("status", "")
        side = Side.BUY if order.get("side") == "BUY" else Side.SELL
        events: list[VenueEvent] = [Placed(vid, int(order.get("orderId", 0)), status)]
        ts = int(order.get("transactTime") or order.get("updateTime") or 0)
        fills = order.get("fills", ())
        for k, f in enumerate(fills):
            done = status == "FILLED" and k == len(fills) - 1
            events.append(
                self._traded(vid, int(f["tradeId"]), order["symbol"], side, f["qty"], f["price"],
                             f["commission"], f.get("commissionAsset") or "", ts, done)
            )  # fmt: skip
        if status in ("CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"):
            events.append(Ended(vid, status))
        return events

    def report_events(self, e: dict[str, Any]) -> list[VenueEvent]:
        """Return the events of a user-stream ``executionReport``."""
        x, status = e.get("x"), e.get("X", "")
        # A cancel's report carries the cancelled order's id in C, the request's in c.
        vid = (e.get("C") or e.get("c", "")) if x == "CANCELED" else e.get("c", "")
        side = Side.BUY if e.get("S") == "BUY" else Side.SELL
        if x == "NEW":
            return [Placed(vid, int(e.get("i", 0)), status)]
        if x == "TRADE":
            return [
                self._traded(vid, int(e["t"]), e["s"], side, e["l"], e["L"], e.get("n") or "0",
                             e.get("N") or "", int(e.get("T", 0)), status == "FILLED")
            ]  # fmt: skip
        if x in ("CANCELED", "EXPIRED", "REJECTED", "TRADE_PREVENTION"):
            return [Ended(vid, status or str(x), str(e.get("r", "")))]
        return []

    def _traded(
        self, vid: str, trade_id: int, symbol: str, side: Side, qty: Any, price: Any,
        commission: Any, asset: str, ts_ms: int, done: bool = False,
    ) -> Traded:  # fmt: skip
        q, p, n = float(qty), float(price), float(commission)
        rules = self.rules.get(symbol)
        base = rules.base_asset if rules else ""
        quote = rules.quote_asset if rules else ""
        if n == 0 or asset == quote:
            fee = n
        elif asset == base:
            fee = n * p
            if side is Side.BUY:
                q -= n  # the account received the quantity less the fee
        else:
            px = self.prices.get(f"{asset}{quote}", 0.0)
            if px <= 0:
                self.log.warning("binance.fee_unvalued", asset=asset, amount=n, symbol=symbol)
            fee = n * px
        return Traded(vid, trade_id, symbol, side, q, p, fee, n, asset, ts_ms, done)

    # ---- the user-data stream --------------------------------------------------------------
    async def run_stream(
        self,
        on_events: Callable[[list[VenueEvent]], Awaitable[None]],
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        """Read the user-data stream forever: reconnect on a drop, reconcile on each connect."""
        backoff = Backoff(0.2, self.cfg.reconnect_max_s)
        session = aiohttp.ClientSession()
        try:
            while True:
                key = ""
                try:
                    key = self.listen_key = await self.client.new_listen_key()
                    url = f"{self.cfg.ws_url.rstrip('/')}/{key}"
                    async with session.ws_connect(url, heartbeat=30.0) as ws:
                        keeper = asyncio.create_task(self._keepalive(key))
                        try:
                            self.connects += 1
                            await on_connect()
                            backoff.reset()
                            await self._read(ws, on_events)
                        finally:
                            keeper.cancel()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # A handshake error names the URL, whose last part is the listen key: a
                    # bearer of the account's order stream for an hour, so it is left out.
                    text = str(exc).replace(key, "<listenKey>") if key else str(exc)
                    self.log.warning("binance.stream_error", error=text[:200])
                wait = backoff.next()
                self.log.warning("binance.stream_dropped", reconnect_in_s=round(wait, 2))
                await asyncio.sleep(wait)
        finally:
            await session.close()

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, on_events: Callable[..., Awaitable[None]]
    ) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            try:
                data = json.loads(msg.data)
            except ValueError:
                self.log.warning("binance.stream_garbage", data=str(msg.data)[:80])
                continue
            kind = data.get("e") if isinstance(data, dict) else None
            if kind == "executionReport":
                events = self.report_events(data)
                if events:
                    await on_events(events)
            elif kind == "listenKeyExpired":
                return  # a new key and a reconciliation

    async def _keepalive(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.cfg.keepalive_s)
            try:
                await self.client.keepalive(key)
                self.keepalives += 1
            except BinanceError as exc:
                self.log.warning("binance.keepalive_failed", error=exc.msg)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # A network blip must not end the keep-alives: the key would expire meanwhile.
                self.log.warning("binance.keepalive_failed", error=type(exc).__name__)

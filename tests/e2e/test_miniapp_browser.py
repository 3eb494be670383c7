"""The Mini App in headless Chromium: sign-in with initData, live data over /ws, admin controls.

The gateway's /ws, /risk and /killswitch are played by a small aiohttp stand-in speaking the
gateway's protocol; the Mini App routes are the real ones. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import msgspec
import pytest
from aiohttp import WSMsgType, web
from playwright.async_api import async_playwright, expect

from levibot.messages import (
    Alert,
    AlertLevel,
    Fill,
    OrderDenied,
    PortfolioSnapshot,
    Position,
    Side,
    Signal,
    SignalSide,
)
from levibot.testing import eventually
from sidecars.miniapp.initdata import sign
from sidecars.miniapp.routes import setup_routes
from sidecars.miniapp.session import verify_session_token

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "123456789:AAtest-token_for-levibot"
SECRET = b"s" * 32
ADMIN, TRADER = 1001, 2002
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Waits go through locators (Playwright's isolated world), not string predicates: the page's
# Content-Security-Policy forbids eval, and the test keeps that policy on.
expect.set_options(timeout=10_000)

T0 = 1_700_000_000_000_000_000
HOUR = 3_600_000_000_000


def _signal(symbol: str, side: SignalSide, price: float, strategy: str = "lgbm") -> Signal:
    return Signal(
        ts_event=T0, ts_init=T0, symbol=symbol, strategy=strategy, side=side,
        probability=0.71, confidence=0.42, price=price, model_id="lgbm-7",
    )  # fmt: skip


def _portfolio(i: int, equity: float) -> PortfolioSnapshot:
    pos = Position(
        symbol="BTCUSDT", quantity=1.0345, avg_price=41_500.0, last_price=43_120.5,
        unrealized_pnl=1_676.4,
    )  # fmt: skip
    return PortfolioSnapshot(
        ts_event=T0 + i * HOUR, ts_init=T0 + i * HOUR, cash=61_250.0, equity=equity,
        realized_pnl=4_100.0, unrealized_pnl=1_750.0, fees=120.0, positions=(pos,),
    )  # fmt: skip


SIGNALS = [
    _signal("BTCUSDT", SignalSide.LONG, 43_120.5),
    _signal("ETHUSDT", SignalSide.SHORT, 2_281.25, "ema_cross"),
]
EQUITY = [100_000 + 900 * (i % 5) + 450 * i for i in range(1, 13)] + [106_400.0]
ALERT = Alert(
    ts_event=T0, ts_init=T0, alert_id="a1", level=AlertLevel.WARNING, source="feed",
    text="gap in BTCUSDT bars",
)  # fmt: skip
FILL = Fill(
    ts_event=T0, ts_init=T0, symbol="BTCUSDT", fill_id="f1", client_order_id="c1",
    side=Side.BUY, quantity=1.0345, price=41_500.0, fee=4.2,
)  # fmt: skip
DENIED = OrderDenied(
    ts_event=T0, ts_init=T0, symbol="ETHUSDT", client_order_id="c2", strategy="ema_cross",
    code="MAX_EXPOSURE", reason="total exposure above limit",
)  # fmt: skip


def frame(kind: str, **fields: Any) -> str:
    """Return a gateway frame; bus messages are encoded as the gateway does (msgspec JSON)."""
    return msgspec.json.encode({"type": kind, **fields}).decode()


def init_data(user_id: int, *, age_s: float = 5, token: str = TOKEN) -> str:
    """Return initData as Telegram would build it for ``user_id``, URL-encoded once more."""
    user = {"id": user_id, "first_name": "Ada" if user_id == ADMIN else "Tom", "username": "ada"}
    fields = {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(user, separators=(",", ":")),
        "auth_date": str(int(time.time() - age_s)),
    }
    return quote(sign(fields, token), safe="")  # as it rides in the URL fragment


class GatewayStandIn:
    """The gateway's /ws, GET|PUT /risk and POST /killswitch, recording what the page sends."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        self.subscriptions: list[dict[str, Any]] = []
        self.kill_switch = False

    def claims(self, request: web.Request) -> dict[str, Any] | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") or request.query.get("token", "")
        try:
            return verify_session_token(token, SECRET)
        except Exception:
            return None

    async def ws(self, request: web.Request) -> web.StreamResponse:
        # Frames as sidecars/gateway/ws.py documents them: one snapshot keyed by channel,
        # then events whose data is the bus message (with its "type" tag), and heartbeats.
        if self.claims(request) is None:
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            sub = json.loads(msg.data)
            self.subscriptions.append(sub)
            data = {
                "portfolio": _portfolio(0, 100_000.0),
                "signals": SIGNALS,
                "orders": [],
                "alerts": [ALERT],
            }
            await ws.send_str(
                frame("snapshot", channels=sub["channels"], symbols=sub["symbols"], data=data)
            )
            await ws.send_str(frame("heartbeat", ts=T0))
            sol = _signal("SOLUSDT", SignalSide.LONG, 101.75)
            await ws.send_str(frame("event", channel="signals", data=sol))
            await ws.send_str(frame("event", channel="fills", data=FILL))
            await ws.send_str(frame("event", channel="orders", data=DENIED))
            for i, equity in enumerate(EQUITY, start=1):
                await ws.send_str(frame("event", channel="portfolio", data=_portfolio(i, equity)))
        return ws

    async def risk(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        if claims is None:
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        if request.method == "PUT":
            self.requests.append(("PUT", "/risk", dict(request.headers), await request.json()))
            return web.json_response({"ok": True})
        return web.json_response(
            {
                "kill_switch": self.kill_switch,
                "trading_state": "active",
                "policy": "moderate",
                "recent_denials": {"MAX_EXPOSURE": 1},  # the gateway's RiskView
            }
        )

    async def killswitch(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        if claims is None or "admin" not in claims["scopes"]:
            return web.json_response({"error": {"code": "forbidden"}}, status=403)
        body = await request.json()
        self.requests.append(("POST", "/killswitch", dict(request.headers), body))
        self.kill_switch = bool(body["on"])
        return web.json_response({"on": self.kill_switch})


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, GatewayStandIn]]:
    gateway = GatewayStandIn()
    app = web.Application()
    setup_routes(app, bot_token=TOKEN, session_secret=SECRET, admin_user_ids=frozenset({ADMIN}))
    app.router.add_get("/ws", gateway.ws)
    app.router.add_route("*", "/risk", gateway.risk)
    app.router.add_post("/killswitch", gateway.killswitch)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", gateway
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not await anyio.Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        await browser.close()


async def test_admin_sees_live_data_and_the_kill_switch_sends_an_authorised_request(
    site: tuple[str, GatewayStandIn], browser: Any
) -> None:
    base, gateway = site
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page(viewport={"width": 760, "height": 1000})
    page.set_default_timeout(10_000)
    await page.goto(f"{base}/app#tgWebAppData={init_data(ADMIN)}&tgWebAppVersion=7.0")

    await page.wait_for_selector("body[data-auth=admin]")
    assert await page.text_content("#user") == "Ada @ada"
    # The snapshot (oldest first) plus one live event, shown newest first.
    await expect(page.locator("#signals li")).to_have_count(3)
    signals = await page.locator("#signals li").all_text_contents()
    assert [s.split(" · ")[0] for s in signals] == ["SOLUSDT LONG", "ETHUSDT SHORT", "BTCUSDT LONG"]
    assert await page.text_content("#positions tbody td") == "BTCUSDT"
    await expect(page.locator("#equity")).to_have_text("106,400.00")
    points = await page.get_attribute("#equity-chart polyline", "points")
    assert points is not None and len(points.split()) == len(EQUITY) + 1  # snapshot + events
    await expect(page.locator("#feed li")).to_have_count(3)
    feed = await page.locator("#feed li").all_text_contents()
    assert feed[0].startswith("DENIED ETHUSDT [MAX_EXPOSURE]")
    assert feed[1] == "FILL BTCUSDT BUY 1.0345 @ 41,500.00"
    assert "gap in BTCUSDT bars" in feed[2]
    await expect(page.locator("#risk dd").last).to_have_text("MAX_EXPOSURE ×1")
    assert gateway.subscriptions[0]["op"] == "subscribe"
    assert {"signals", "portfolio"} <= set(gateway.subscriptions[0]["channels"])
    assert (
        gateway.subscriptions[0]["symbols"] is None
    )  # every symbol (the gateway reads [] as none)
    assert await page.is_visible("#admin")
    await page.screenshot(path=str(ARTIFACTS / "miniapp_admin.png"), full_page=True)

    await page.click("#ks-on")
    await eventually(lambda: [r for r in gateway.requests if r[1] == "/killswitch"])
    method, _, headers, body = gateway.requests[0]
    assert (method, body) == ("POST", {"on": True})
    claims = verify_session_token(headers["Authorization"].removeprefix("Bearer "), SECRET)
    assert claims["sub"] == f"tg:{ADMIN}" and "admin" in claims["scopes"]
    await expect(page.locator("#admin-result")).to_have_text("Kill switch ON requested")
    await expect(page.locator("#risk dd").filter(has_text=re.compile(r"^ON$"))).to_have_count(1)
    await page.select_option("#policy", "aggressive")
    await page.click("#apply-risk")
    await eventually(lambda: [r for r in gateway.requests if r[1] == "/risk"])
    assert gateway.requests[-1][3] == {"policy": "aggressive", "trading_state": "active"}
    await page.screenshot(path=str(ARTIFACTS / "miniapp_admin_after_killswitch.png"))

    # A trader signed in through Telegram's WebApp object sees the data but no controls.
    trader = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    trader.set_default_timeout(10_000)
    await trader.add_init_script(
        "window.Telegram = {WebApp: {initData: decodeURIComponent("
        + json.dumps(init_data(TRADER))
        + "), ready() {}, expand() {}}};"
    )
    await trader.goto(f"{base}/app")
    await trader.wait_for_selector("body[data-auth=user]")
    await expect(trader.locator("#signals li")).to_have_count(3)
    assert not await trader.is_visible("#admin")
    await trader.screenshot(path=str(ARTIFACTS / "miniapp_trader_phone.png"), full_page=True)


async def test_stale_or_forged_init_data_is_refused(
    site: tuple[str, GatewayStandIn], browser: Any
) -> None:
    base, gateway = site
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page(viewport={"width": 720, "height": 500})
    page.set_default_timeout(10_000)
    stale = init_data(ADMIN, age_s=2 * 86400)
    await page.goto(f"{base}/app#tgWebAppData={stale}")
    await page.wait_for_selector("body[data-auth=refused]")
    assert "(stale)" in (await page.text_content("#refusal-text") or "")
    assert not await page.is_visible("#main")
    await page.screenshot(path=str(ARTIFACTS / "miniapp_refused.png"))

    forged = init_data(ADMIN, token="987654321:another-bots-token")
    await page.goto(f"{base}/app#tgWebAppData={forged}")
    await page.reload()  # a fragment-only change does not reload the page
    await page.wait_for_selector("body[data-auth=refused]")
    assert "(bad_hash)" in (await page.text_content("#refusal-text") or "")

    await page.goto(f"{base}/app")
    await page.wait_for_selector("body[data-auth=refused]")
    assert "initData" in (await page.text_content("#refusal-text") or "")
    assert gateway.subscriptions == [] and gateway.requests == []

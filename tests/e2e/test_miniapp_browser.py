"""The Mini App in headless Chromium: sign-in with initData, live data over /ws, admin controls,
the price and equity charts (lightweight-charts), and the demo's one-time sign-in link.

In the first tests the gateway's /ws, /charts, /risk and /killswitch are played by a small aiohttp
stand-in speaking the gateway's protocol (its chart data built by the gateway's own
``ChartHistory``); the Mini App routes are the real ones. The demo link is tested against a real
gateway. Screenshots go to tests/artifacts/.
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
    Bar,
    Fill,
    OrderDenied,
    PortfolioSnapshot,
    Position,
    Side,
    Signal,
    SignalSide,
)
from levibot.testing import eventually
from sidecars.gateway.charts import ChartHistory
from sidecars.miniapp import demolink
from sidecars.miniapp.initdata import sign
from sidecars.miniapp.routes import setup_routes
from sidecars.miniapp.session import verify_session_token
from tests.unit.test_gateway_support import running_gateway

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
N_BARS = 48  # hourly BTCUSDT bars before T0's (which closes at T0 + 1h): the price chart


def _bar(i: int, symbol: str = "BTCUSDT") -> Bar:
    """Bar ``i`` of a deterministic walk; bar 0 opens at T0 - N_BARS hours."""
    start = T0 + (i - N_BARS) * HOUR
    base = 41_000.0 + 600 * ((i * 7) % 11) / 11 + 40 * i if symbol == "BTCUSDT" else 2_250.0
    up = (i * 5) % 3 != 0
    open_, close = (base, base + 180) if up else (base + 180, base)
    return Bar(
        ts_event=start + HOUR, ts_init=start + HOUR, symbol=symbol, venue="binance",
        timeframe="1h", start=start, open=open_, high=max(open_, close) + 90,
        low=min(open_, close) - 110, close=close, volume=100.0 + 13 * (i % 9),
    )  # fmt: skip


BARS = [_bar(i) for i in range(N_BARS + 1)]  # the last one, T0's, also comes live over /ws


def _at(i: int, side: Any) -> Signal | Fill:
    """A signal (SignalSide) or fill (Side) at bar ``i``'s close, as the engine emits them."""
    bar = BARS[i] if i < len(BARS) else _bar(i)
    ts, price = bar.ts_event, bar.close
    if isinstance(side, SignalSide):
        return Signal(
            ts_event=ts, ts_init=ts, symbol="BTCUSDT", strategy="lgbm", side=side,
            probability=0.7, confidence=0.4, price=price,
        )  # fmt: skip
    return Fill(
        ts_event=ts, ts_init=ts, symbol="BTCUSDT", fill_id=f"h{i}", client_order_id=f"h{i}",
        side=side, quantity=0.25, price=price, fee=1.0,
    )  # fmt: skip


CHART_SIGNALS = [
    _at(8, SignalSide.LONG), _at(20, SignalSide.SHORT), _at(33, SignalSide.LONG),
    _at(41, SignalSide.FLAT),
]  # fmt: skip
CHART_FILLS = [_at(9, Side.BUY), _at(21, Side.SELL), _at(34, Side.BUY)]
#: Marks on the price chart: the non-flat signals and the fills, with the live BTCUSDT signal and
#: FILL, both at T0: the close of the bar before the last (an event at a close marks that bar).
MARKS = 3 + 3 + 1 + 1
#: What the bus brings while the page first loads /charts: a signal and a fill in the last bar.
LATE = (_at(N_BARS, SignalSide.SHORT), _at(N_BARS, Side.SELL))
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
        # What the gateway's read models would hold once it had seen everything /ws sends.
        self.history = ChartHistory()
        for bar in [*BARS, _bar(10, "ETHUSDT")]:
            self.history.bar(bar)
        for fill in [*CHART_FILLS, FILL]:
            self.history.fill(fill)
        for i, equity in enumerate([100_000.0, *EQUITY]):
            self.history.portfolio(_portfolio(i, equity))
        self.signals = [*CHART_SIGNALS, *SIGNALS]
        self.loading = anyio.Event()
        self.answered = anyio.Event()
        self.late_sent = False

    async def charts(self, request: web.Request) -> web.Response:
        if self.claims(request) is None:
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        view = self.history.view(request.query.get("symbol") or None, self.signals, limit=300)
        if not self.loading.is_set():
            # The first load answers slowly, and the bus moves on meanwhile: what /ws sends
            # during the load is not in this answer, and the page must not lose it.
            self.loading.set()
            await anyio.sleep(0.5)
            self.answered.set()
        return web.Response(body=msgspec.json.encode(view), content_type="application/json")

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
            if not self.late_sent:
                self.late_sent = True
                with anyio.fail_after(5):
                    await self.loading.wait()
                late_signal, late_fill = LATE
                await ws.send_str(frame("event", channel="signals", data=late_signal))
                await ws.send_str(frame("event", channel="fills", data=late_fill))
                self.signals.append(late_signal)  # type: ignore[arg-type]  # held from now on
                self.history.fill(late_fill)  # type: ignore[arg-type]
                # A bar while the page has no chart yet makes it load again (and that load
                # would bring LATE): this one comes only once the first load is done.
                with anyio.fail_after(5):
                    await self.answered.wait()
                await anyio.sleep(0.3)
            await ws.send_str(frame("event", channel="bars", data=BARS[-1]))  # the last again
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


def watch_console(page: Any) -> list[str]:
    """Collect the page's errors: console errors (a CSP violation is one) and uncaught ones."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def count_colours(png: bytes, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    """Return how many pixels of ``png`` are within ``tolerance`` of ``rgb``."""
    from io import BytesIO

    from PIL import Image

    data = Image.open(BytesIO(png)).convert("RGB").tobytes()
    pixels = zip(data[0::3], data[1::3], data[2::3], strict=True)
    return sum(
        1 for px in pixels if all(abs(c - r) <= tolerance for c, r in zip(px, rgb, strict=True))
    )


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, GatewayStandIn]]:
    gateway = GatewayStandIn()
    app = web.Application()
    setup_routes(app, bot_token=TOKEN, session_secret=SECRET, admin_user_ids=frozenset({ADMIN}))
    app.router.add_get("/ws", gateway.ws)
    app.router.add_get("/charts", gateway.charts)
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
    page = await browser.new_page(viewport={"width": 900, "height": 1100})
    page.set_default_timeout(10_000)
    problems = watch_console(page)
    await page.goto(f"{base}/app#tgWebAppData={init_data(ADMIN)}&tgWebAppVersion=7.0")

    await page.wait_for_selector("body[data-auth=admin]")
    assert await page.text_content("#user") == "Ada @ada"
    # The snapshot (oldest first) plus the live events, shown newest first.
    await expect(page.locator("#signals li")).to_have_count(4)  # with LATE's
    signals = await page.locator("#signals li").all_text_contents()
    assert [s.split(" · ")[0] for s in signals] == [
        "BTCUSDT SHORT", "SOLUSDT LONG", "ETHUSDT SHORT", "BTCUSDT LONG",
    ]  # fmt: skip
    assert await page.text_content("#positions tbody td") == "BTCUSDT"
    await expect(page.locator("#equity")).to_have_text("106,400.00")
    # The equity curve: its history from /charts, and the live snapshots (the same instants).
    await expect(page.locator("#equity-chart")).to_have_attribute(
        "data-points", str(len(EQUITY) + 1)
    )
    # The price chart: the history's candles (the live bar corrects the last), the marks.
    price = page.locator("#price-chart")
    await expect(price).to_have_attribute("data-symbol", "BTCUSDT")
    # ... and what came over /ws while /charts loaded (LATE) is neither lost nor doubled.
    await expect(price).to_have_attribute("data-bars", str(len(BARS)))
    await expect(price).to_have_attribute("data-markers", str(MARKS + 2))
    await expect(page.locator("#chart-timeframe")).to_have_text("1h")
    assert await page.locator("#price-chart canvas").count() > 0  # drawn by the library
    assert await page.locator("#equity-chart canvas").count() > 0
    shot = await price.screenshot()
    green, red = count_colours(shot, (34, 197, 94)), count_colours(shot, (239, 68, 68))
    assert green > 300 and red > 300, (green, red)  # up and down candles really drawn
    assert await page.locator("#chart-symbol option").all_text_contents() == ["BTCUSDT", "ETHUSDT"]
    await expect(page.locator("#feed li")).to_have_count(4)
    feed = await page.locator("#feed li").all_text_contents()
    assert feed[0] == f"FILL BTCUSDT SELL 0.2500 @ {BARS[-1].close:,.2f}"
    assert feed[1].startswith("DENIED ETHUSDT [MAX_EXPOSURE]")
    assert feed[2] == "FILL BTCUSDT BUY 1.0345 @ 41,500.00"
    assert "gap in BTCUSDT bars" in feed[3]
    await expect(page.locator("#risk dd").last).to_have_text("MAX_EXPOSURE ×1")
    assert gateway.subscriptions[0]["op"] == "subscribe"
    assert {"signals", "portfolio"} <= set(gateway.subscriptions[0]["channels"])
    assert (
        gateway.subscriptions[0]["symbols"] is None
    )  # every symbol (the gateway reads [] as none)
    assert await page.is_visible("#admin")
    await page.screenshot(path=str(ARTIFACTS / "miniapp_admin.png"), full_page=True)
    await price.screenshot(path=str(ARTIFACTS / "miniapp_price_chart.png"))
    await page.locator("#portfolio-card").screenshot(path=str(ARTIFACTS / "miniapp_equity.png"))
    await page.select_option("#chart-symbol", "ETHUSDT")
    await expect(price).to_have_attribute("data-symbol", "ETHUSDT")
    await expect(price).to_have_attribute("data-bars", "1")
    await expect(price).to_have_attribute("data-markers", "0")
    await page.select_option("#chart-symbol", "BTCUSDT")
    await expect(price).to_have_attribute("data-markers", str(MARKS + 2))

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
    await expect(trader.locator("#signals li")).to_have_count(3)  # LATE was for the first
    assert not await trader.is_visible("#admin")
    await expect(trader.locator("#price-chart")).to_have_attribute("data-bars", str(len(BARS)))
    await trader.screenshot(path=str(ARTIFACTS / "miniapp_trader_phone.png"), full_page=True)
    assert problems == [], problems  # no CSP violation, no script error


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


async def test_the_demo_link_opens_the_app_as_admin_in_a_browser_once(
    tmp_path: Path, browser: Any, site: tuple[str, GatewayStandIn]
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    token, sha = demolink.new_token()
    async with running_gateway(tmp_path, demo_token_sha256=sha) as g:  # the real gateway
        for msg in [*BARS, *CHART_SIGNALS, *CHART_FILLS]:
            await g.actor.handle(msg)
        for i, equity in enumerate(EQUITY):
            await g.actor.handle(_portfolio(i, equity))
        context = await browser.new_context(viewport={"width": 900, "height": 1100})
        page = await context.new_page()
        page.set_default_timeout(10_000)
        problems = watch_console(page)
        await page.goto(f"{g.url}/app#demo={token}")  # as `levibot demo` prints it

        await page.wait_for_selector("body[data-auth=admin]")
        assert await page.text_content("#user") == "demo"
        assert page.url == f"{g.url}/app"  # the spent token is gone from the address bar
        price = page.locator("#price-chart")
        await expect(price).to_have_attribute("data-bars", str(len(BARS)))
        await expect(price).to_have_attribute("data-markers", "6")  # 3 non-flat signals, 3 fills
        await expect(page.locator("#equity-chart")).to_have_attribute(
            "data-points", str(len(EQUITY))
        )
        await expect(page.locator("#conn")).to_have_text("live")
        await page.screenshot(path=str(ARTIFACTS / "miniapp_demo.png"), full_page=True)
        # A live bar over the real /ws extends the chart.
        await g.actor.handle(_bar(N_BARS + 1))
        await expect(price).to_have_attribute("data-bars", str(len(BARS) + 1))
        # Admin controls go through the real gateway under the demo session.
        await page.click("#ks-on")
        await expect(page.locator("#admin-result")).to_have_text("Kill switch ON requested")
        assert any(type(m).__name__ == "SetKillSwitch" and m.on for m in g.ctx.published)

        # A reload signs in again with the HttpOnly renewal cookie, without the token.
        await page.reload()
        await page.wait_for_selector("body[data-auth=admin]")
        assert problems == [], problems

        # The link is one-time: another browser (no cookie) that opens it is refused.
        other = await browser.new_page(viewport={"width": 720, "height": 500})
        await other.goto(f"{g.url}/app#demo={token}")
        await other.wait_for_selector("body[data-auth=refused]")
        assert "(token_spent)" in (await other.text_content("#refusal-text") or "")
        assert not await other.is_visible("#main")
        await other.screenshot(path=str(ARTIFACTS / "miniapp_demo_link_spent.png"))
        await context.close()

    # Where the gateway is not in demo mode there is no such way in: initData only.
    base, gateway = site
    page = await browser.new_page()
    await page.goto(f"{base}/app#demo={token}")
    await page.wait_for_selector("body[data-auth=refused]")
    assert not await page.is_visible("#main") and gateway.subscriptions == []

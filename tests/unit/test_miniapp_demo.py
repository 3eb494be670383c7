"""The demo's one-time sign-in link: POST /auth/demo on a real gateway, and where it refuses."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from levibot.errors import ConfigError
from levibot.settings import load_settings
from sidecars.gateway.actor import GatewayConfig
from sidecars.miniapp import demolink
from sidecars.miniapp.routes import setup_routes
from sidecars.miniapp.session import verify_session_token
from tests.unit.test_gateway_support import SECRET, Harness, running_gateway

pytestmark = pytest.mark.anyio


async def post(
    g: Harness, body: Any = None, session: aiohttp.ClientSession | None = None, **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with (session or g.session).post(f"{g.url}/auth/demo", json=body, **kw) as r:
        return r.status, await r.json()


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies of an IP-address host, as browsers do."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_the_link_signs_in_once_as_admin_and_the_browser_can_renew(tmp_path: Path) -> None:
    token, sha = demolink.new_token()
    async with running_gateway(tmp_path, demo_token_sha256=sha) as g:
        status, err = await post(g, {"token": "not-the-token"})
        assert (status, err["error"]["code"]) == (401, "token_invalid")  # and not spent by it

        async with browser() as web, web.post(f"{g.url}/auth/demo", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
            cookie = r.cookies[demolink.COOKIE_NAME]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert cookie["path"] == "/auth/demo"
            status, again = await post(g, {}, web)  # renewing needs no token, only the cookie
            assert status == 200 and again["admin"] is True
            # One time only: the same link again is refused, even from the same browser.
            status, err = await post(g, {"token": token}, web)
            assert (status, err["error"]["code"]) == (401, "token_spent")
        assert body["admin"] is True and body["user"]["id"] == "demo"
        claims = verify_session_token(body["token"], SECRET.encode())
        assert claims["sub"] == "tg:demo" and "admin" in claims["scopes"]
        # The gateway takes the session like a Telegram one: reads and admin commands work.
        bearer = {"Authorization": f"Bearer {body['token']}"}
        async with g.session.get(f"{g.url}/risk", headers=bearer) as r:
            assert r.status == 200
        async with g.session.post(f"{g.url}/killswitch", json={"on": True}, headers=bearer) as r:
            assert r.status == 202, await r.text()
        assert any(type(m).__name__ == "SetKillSwitch" for m in g.ctx.published)

        # Another browser (no renewal cookie) can neither renew nor use the link again.
        status, err = await post(g, {})
        assert (status, err["error"]["code"]) == (401, "renewal_invalid")
        status, err = await post(g, {"token": token})
        assert (status, err["error"]["code"]) == (401, "token_spent")


async def test_without_demo_mode_there_is_no_route_and_initdata_stays_the_way_in(
    tmp_path: Path,
) -> None:
    _, sha = demolink.new_token()
    async with running_gateway(tmp_path) as g:
        async with g.session.post(f"{g.url}/auth/demo", json={"token": "x"}) as r:
            assert r.status == 404
        async with g.session.get(f"{g.url}/openapi.json") as r:
            assert "/auth/demo" not in (await r.json())["paths"]
    async with (
        running_gateway(tmp_path / "demo", demo_token_sha256=sha) as g,
        g.session.get(f"{g.url}/openapi.json") as r,
    ):
        assert "/auth/demo" in (await r.json())["paths"]


def test_the_config_refuses_a_demo_token_unless_the_gateway_is_on_loopback() -> None:
    _, sha = demolink.new_token()
    for host in ("0.0.0.0", "192.0.2.2", "::", "gateway.example"):
        with pytest.raises(ConfigError, match="loopback"):
            load_settings(overrides={"gateway": {"host": host, "demo_token_sha256": sha}})
    for host in ("127.0.0.1", "::1", "localhost"):
        assert GatewayConfig(host=host, demo_token_sha256=sha).demo_token_sha256 == sha
    with pytest.raises(ValueError, match="SHA-256"):
        demolink.DemoSignIn("abc")


async def test_proxied_or_foreign_host_requests_are_refused(tmp_path: Path) -> None:
    token, sha = demolink.new_token()
    # A trusted local proxy says the client is elsewhere: the gateway sees a remote client.
    async with running_gateway(
        tmp_path, demo_token_sha256=sha, trusted_proxies=("127.0.0.1/32",)
    ) as g:
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        status, err = await post(g, {"token": token}, headers=forwarded)
        assert (status, err["error"]["code"]) == (403, "not_local")
    async with running_gateway(tmp_path / "b", demo_token_sha256=sha) as g:
        # Any proxy header at all: a local reverse proxy would make every client look local.
        for headers in ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
            status, err = await post(g, {"token": token}, headers=headers)
            assert (status, err["error"]["code"]) == (403, "not_local"), headers
        # DNS rebinding: a page of another site that resolves to 127.0.0.1 names its own host.
        status, err = await post(g, {"token": token}, headers={"Host": "evil.example:8080"})
        assert (status, err["error"]["code"]) == (403, "not_local")
        status, body = await post(g, {"token": token}, headers={"Host": "localhost:1"})
        assert status == 200 and body["admin"] is True  # none of that spent the token


def _outside_address() -> str:
    """Return this machine's address on its default route (not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        address: str = s.getsockname()[0]
    if demolink.is_loopback(address):
        pytest.fail("this machine has no non-loopback IPv4 address to test from")
    return address


async def test_a_client_on_another_address_is_refused() -> None:
    # The gateway's config keeps it on loopback; here the Mini App routes alone listen on every
    # address, so that a connection really arrives from a non-loopback one.
    token, sha = demolink.new_token()
    app = web.Application()
    setup_routes(app, bot_token="", session_secret=b"k" * 32, demo_token_sha256=sha)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            outside = f"http://{_outside_address()}:{port}/auth/demo"
            async with session.post(outside, json={"token": token}) as r:
                assert (r.status, (await r.json())["error"]["code"]) == (403, "not_local")
            local = f"http://127.0.0.1:{port}/auth/demo"
            async with session.post(local, json={"token": token}) as r:
                assert r.status == 200  # the refusal did not spend it
    finally:
        await runner.cleanup()


def test_loopback_and_host_parsing() -> None:
    assert demolink.is_loopback("127.0.0.1") and demolink.is_loopback("127.8.9.10")
    assert demolink.is_loopback("::1") and demolink.is_loopback("[::1]")
    assert demolink.is_loopback("LOCALHOST")
    assert not demolink.is_loopback("0.0.0.0") and not demolink.is_loopback("localhost.evil.com")
    assert demolink.host_name("[::1]:8080") == "::1"
    assert demolink.host_name("localhost:8080") == "localhost"
    assert demolink.host_name("127.0.0.1") == "127.0.0.1"


def test_the_renewal_cookie_expires() -> None:
    clock = [0.0]
    token, sha = demolink.new_token()
    demo = demolink.DemoSignIn(sha, renew_ttl_s=60, now=lambda: clock[0])
    renewal = demo.redeem(token)
    demo.renew(renewal)
    clock[0] = 61.0
    with pytest.raises(demolink.DemoRefused) as refused:
        demo.renew(renewal)
    assert (refused.value.status, refused.value.code) == (401, "renewal_expired")

"""The Mini App routes over HTTP: the page, its assets and POST /auth/telegram."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sidecars.miniapp.initdata import sign
from sidecars.miniapp.routes import render_page, setup_routes
from sidecars.miniapp.session import issue_session_token, verify_session_token

pytestmark = pytest.mark.anyio

TOKEN = "123456789:AAtest-token_for-levibot"
SECRET = b"k" * 32
ADMIN, TRADER = 1001, 2002
Client = TestClient[web.Request, web.Application]


def init_data(user_id: int, age_s: float = 10, **extra: str) -> str:
    user = json.dumps({"id": user_id, "first_name": "Ada", "username": "ada", "is_premium": True})
    return sign({"user": user, "auth_date": str(int(time.time() - age_s)), **extra}, TOKEN)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application()
    setup_routes(
        app,
        bot_token=TOKEN,
        session_secret=SECRET,
        max_age_s=3600,
        admin_user_ids=frozenset({ADMIN}),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_page_and_assets_are_served_without_external_resources(client: Client) -> None:
    res = await client.get("/app")
    assert res.status == 200 and res.content_type == "text/html"
    html = await res.text()
    assert '<script src="/app/static/app.js"' in html
    assert "telegram-web-app.js" not in html  # no copy of Telegram's script shipped here
    assert "http://" not in html and "https://" not in html
    assert "default-src 'self'" in res.headers["Content-Security-Policy"]
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        res = await client.get(f"/app/static/{asset}")
        assert res.status == 200 and kind in res.content_type


async def test_static_route_does_not_leave_its_folder(client: Client) -> None:
    for path in ("/app/static/../routes.py", "/app/static/%2e%2e/routes.py", "/app/static/"):
        res = await client.get(path)
        assert res.status in (403, 404), path


def test_page_includes_telegram_script_only_when_present(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<head><!--TELEGRAM_WEB_APP_JS--></head>")
    assert "script" not in render_page(tmp_path)
    (tmp_path / "telegram-web-app.js").write_text("// Telegram's script")
    assert render_page(tmp_path) == (
        '<head><script src="/app/static/telegram-web-app.js"></script></head>'
    )


async def test_genuine_init_data_gets_a_read_only_session_token(client: Client) -> None:
    res = await client.post("/auth/telegram", json={"initData": init_data(TRADER)})
    assert res.status == 200
    body = await res.json()
    assert body["admin"] is False and body["expires_in"] == 300
    assert body["user"] == {"id": TRADER, "first_name": "Ada", "username": "ada"}
    claims = verify_session_token(body["token"], SECRET)
    assert claims["sub"] == f"tg:{TRADER}" and claims["scopes"] == ["read"]
    assert claims["exp"] - claims["iat"] == 300
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"


async def test_admins_get_trade_and_admin_scopes(client: Client) -> None:
    res = await client.post("/auth/telegram", json={"initData": init_data(ADMIN)})
    body = await res.json()
    assert body["admin"] is True
    assert verify_session_token(body["token"], SECRET)["scopes"] == ["read", "trade", "admin"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"not json", 400, "bad_request"),
        (b"{}", 400, "bad_request"),
        (b'{"initData": 42}', 400, "bad_request"),
        (b'{"initData": ""}', 401, "missing"),
        (b'{"initData": "user=1&auth_date=1&hash=abc"}', 401, "bad_hash"),
    ],
)
async def test_bad_requests_are_refused_with_a_json_error(
    client: Client, payload: bytes, status: int, code: str
) -> None:
    res = await client.post("/auth/telegram", data=payload)
    assert res.status == status
    assert (await res.json())["error"]["code"] == code


async def test_stale_init_data_is_refused(client: Client) -> None:
    res = await client.post("/auth/telegram", json={"initData": init_data(ADMIN, age_s=7200)})
    assert res.status == 401
    error = (await res.json())["error"]
    assert error["code"] == "stale" and "reopen" in error["message"]


async def test_init_data_for_another_bot_is_refused(client: Client) -> None:
    forged = init_data(ADMIN).replace(f"%22id%22%3A+{ADMIN}", f"%22id%22%3A+{TRADER}")
    assert forged != init_data(ADMIN)
    res = await client.post("/auth/telegram", json={"initData": forged})
    assert res.status == 401 and (await res.json())["error"]["code"] == "bad_hash"


def test_session_tokens_expire_and_need_the_right_secret() -> None:
    old = issue_session_token(7, admin=False, secret=SECRET, now=time.time() - 301)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_session_token(old, SECRET)
    fresh = issue_session_token(7, admin=True, secret=SECRET)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_session_token(fresh, b"x" * 32)
    assert verify_session_token(fresh, SECRET)["sub"] == "tg:7"


def test_setup_routes_refuses_an_empty_session_secret() -> None:
    with pytest.raises(ValueError, match="session_secret"):
        setup_routes(web.Application(), bot_token=TOKEN, session_secret=b"")


def test_the_gateway_accepts_mini_app_session_tokens_with_their_scopes() -> None:
    # The contract with sidecars.gateway: same secret, iss levibot-miniapp, sub tg:<id>, scopes.
    from sidecars.gateway.auth.tokens import AuthError, TokenService

    service = TokenService(SECRET.decode())
    admin = service.verify(issue_session_token(ADMIN, admin=True, secret=SECRET))
    assert admin.sub == f"tg:{ADMIN}" and admin.scopes == ("read", "trade", "admin")
    trader = service.verify(issue_session_token(TRADER, admin=False, secret=SECRET))
    assert trader.scopes == ("read",)
    expired = issue_session_token(TRADER, admin=False, secret=SECRET, now=time.time() - 600)
    with pytest.raises(AuthError):
        service.verify(expired)


async def test_a_body_nested_thousands_deep_is_a_400_not_a_500(client: Client) -> None:
    # 100,000 deep: past msgspec's recursion bound on 3.11 (1,000) and 3.13 (10,000).
    deep = b'{"initData": "x", "z": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    res = await client.post(
        "/auth/telegram", data=deep, headers={"Content-Type": "application/json"}
    )
    error = (await res.json())["error"]
    assert res.status == 400 and error["code"] == "bad_request"
    assert "nested too deeply" in error["message"]

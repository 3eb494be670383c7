"""The Mini App's HTTP routes, mounted into the gateway's aiohttp application.

``GET /app`` serves the page, ``/app/static/*`` its script and styles (``/app/static/vendor/*``
the vendored chart library), and ``POST /auth/telegram`` trades a verified ``initData`` for a
short-lived session token that the gateway's ``/ws`` and REST routes accept as
``Authorization: Bearer``. In ``levibot demo`` only, ``POST /auth/demo`` trades the one-time
token of the printed link for an admin session (``sidecars.miniapp.demolink``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from sidecars.miniapp import demolink
from sidecars.miniapp.initdata import InitDataError, verify_init_data
from sidecars.miniapp.session import TOKEN_TTL_S, issue_session_token

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
#: Telegram's own script; included in the page only when an operator put a copy here.
TELEGRAM_JS = "telegram-web-app.js"
_PLACEHOLDER = "<!--TELEGRAM_WEB_APP_JS-->"
#: The assets ``/app/static/{filename}`` serves: a script or a style sheet of STATIC_DIR.
_MEDIA = {".js": "text/javascript", ".css": "text/css"}
ASSET_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.(js|css)$"
_ASSET = re.compile(ASSET_PATTERN)

#: The one inline style sheet the page allows: the attribution logo's, a fixed text in the
#: vendored lightweight-charts (a new version may change it: the browser test then reports the
#: CSP violation with the new hash).
_CHART_LOGO_STYLE = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        f"default-src 'self'; script-src 'self'; style-src 'self' {_CHART_LOGO_STYLE}; "
        "img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'"
    ),
}


class AuthRequest(msgspec.Struct, forbid_unknown_fields=False):
    """The body of ``POST /auth/telegram``."""

    initData: str


class DemoAuthRequest(msgspec.Struct, forbid_unknown_fields=False):
    """The body of ``POST /auth/demo``: the link's token, or nothing to renew by cookie."""

    token: str | None = None


_auth_decoder = msgspec.json.Decoder(AuthRequest)
_demo_decoder = msgspec.json.Decoder(DemoAuthRequest)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def render_page(static_dir: Path = STATIC_DIR) -> str:
    """Return index.html, with Telegram's script tag when the script is present."""
    html = (static_dir / "index.html").read_text(encoding="utf-8")
    tag = ""
    if (static_dir / TELEGRAM_JS).is_file():
        tag = f'<script src="/app/static/{TELEGRAM_JS}"></script>'
    return html.replace(_PLACEHOLDER, tag)


def setup_routes(
    app: web.Application,
    *,
    bot_token: str,
    session_secret: bytes,
    max_age_s: int = 86400,
    admin_user_ids: frozenset[int] = frozenset(),
    demo_token_sha256: str = "",
) -> None:
    """Add ``GET /app``, ``/app/static/*`` and ``POST /auth/telegram`` to ``app``.

    With ``demo_token_sha256`` (``levibot demo`` only) ``POST /auth/demo`` too.
    """
    if not session_secret:
        raise ValueError("session_secret must not be empty")
    page = render_page()

    async def get_app(request: web.Request) -> web.Response:
        """Serve the Telegram Mini App page."""
        return web.Response(text=page, content_type="text/html", headers=_HTML_HEADERS)

    def asset(folder: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def get_asset(request: web.Request) -> web.StreamResponse:
            """Serve a script or style sheet of the Mini App."""
            name = request.match_info["filename"]
            path = folder / name
            if not _ASSET.fullmatch(name) or not path.is_file():
                return _error(404, "not_found", f"no asset {name!r}")
            media = _MEDIA[path.suffix]
            return web.FileResponse(path, headers={"Content-Type": f"{media}; charset=utf-8"})

        return get_asset

    async def post_auth(request: web.Request) -> web.Response:
        """Exchange verified Telegram initData for a 5-minute session token."""
        if not bot_token:
            return _error(503, "not_configured", "the Telegram bot token is not configured")
        try:
            body = _auth_decoder.decode(await request.read())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _error(400, "bad_request", f'expected {{"initData": "..."}}: {exc}')
        except RecursionError:  # a body nested thousands deep: msgspec recurses
            return _error(400, "bad_request", "the request body is nested too deeply")
        try:
            init = verify_init_data(body.initData, bot_token, max_age_s=max_age_s)
        except InitDataError as exc:
            return _error(401, exc.code, str(exc))
        admin = init.user_id in admin_user_ids
        name = str(init.user.get("first_name", ""))
        token = issue_session_token(init.user_id, admin=admin, secret=session_secret, name=name)
        user: dict[str, Any] = {
            k: init.user[k]
            for k in ("id", "first_name", "last_name", "username", "language_code")
            if k in init.user
        }
        return _session(token, user, admin)

    app.router.add_get("/app", get_app)
    app.router.add_get("/app/static/{filename}", asset(STATIC_DIR))
    app.router.add_get("/app/static/vendor/{filename}", asset(VENDOR_DIR))
    app.router.add_post("/auth/telegram", post_auth)
    if demo_token_sha256:
        setup_demo_route(app, token_sha256=demo_token_sha256, session_secret=session_secret)


def setup_demo_route(app: web.Application, *, token_sha256: str, session_secret: bytes) -> None:
    """Add ``POST /auth/demo``: ``levibot demo``'s one-time link (``sidecars.miniapp.demolink``).

    ``token_sha256`` is the digest of the printed token; the gateway's config accepts one only
    when it listens on a loopback address.
    """
    demo = demolink.DemoSignIn(token_sha256)

    async def post_demo(request: web.Request) -> web.Response:
        """Trade the demo link's one-time token (or the renewal cookie) for an admin session."""
        try:
            demolink.check_local(request.remote, request.headers)
            raw = await request.read()
            body = _demo_decoder.decode(raw) if raw else DemoAuthRequest()
        except demolink.DemoRefused as exc:
            return _error(exc.status, exc.code, exc.message)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return _error(400, "bad_request", f'expected {{"token": "..."}} or nothing: {exc}')
        renewal = None
        try:
            if body.token:
                renewal = demo.redeem(body.token)
            else:
                demo.renew(request.cookies.get(demolink.COOKIE_NAME, ""))
        except demolink.DemoRefused as exc:
            return _error(exc.status, exc.code, exc.message)
        user = {"id": demolink.DEMO_USER, "first_name": "demo"}
        token = issue_session_token(
            demolink.DEMO_USER, admin=True, secret=session_secret, name="demo"
        )
        response = _session(token, user, True)
        if renewal is not None:
            response.set_cookie(
                demolink.COOKIE_NAME, renewal, max_age=int(demo.renew_ttl_s), path="/auth/demo",
                httponly=True, samesite="Strict",
            )  # fmt: skip
        return response

    app.router.add_post("/auth/demo", post_demo)


def _session(token: str, user: dict[str, Any], admin: bool) -> web.Response:
    return web.json_response(
        {"token": token, "user": user, "admin": admin, "expires_in": TOKEN_TTL_S},
        headers={"Cache-Control": "no-store"},
    )


def openapi_paths(error_ref: str, *, demo: bool = False) -> dict[str, dict[str, Any]]:
    """Return the OpenAPI paths of these routes; ``error_ref`` points at the error schema.

    ``demo``: ``POST /auth/demo`` is mounted too (``setup_demo_route``).
    """
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": error_ref}}},
    }
    session = {
        "type": "object",
        "required": ["token", "user", "admin", "expires_in"],
        "properties": {
            "token": {"type": "string", "description": "send as Authorization: Bearer"},
            "user": {"type": "object"},
            "admin": {"type": "boolean"},
            "expires_in": {"type": "integer"},
        },
    }
    asset = {
        "parameters": [
            {
                "name": "filename",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": ASSET_PATTERN},
            }
        ],
        "responses": {
            "200": {
                "description": "the asset",
                "content": {media: {"schema": {"type": "string"}} for media in _MEDIA.values()},
            },
            "404": error,
        },
    }
    paths: dict[str, dict[str, Any]] = {
        "/app": {"get": {
            "operationId": "miniapp_get_app", "summary": "The Telegram Mini App page",
            "tags": ["miniapp"],
            "responses": {"200": {"description": "the page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
        "/app/static/{filename}": {"get": {
            "operationId": "miniapp_get_asset", "summary": "A script or style sheet of the page",
            "tags": ["miniapp"], **asset,
        }},
        "/app/static/vendor/{filename}": {"get": {
            "operationId": "miniapp_get_vendor_asset",
            "summary": "A vendored library of the page (lightweight-charts)",
            "tags": ["miniapp"], **asset,
        }},
        "/auth/telegram": {"post": {
            "operationId": "miniapp_post_auth",
            "summary": "Exchange verified Telegram initData for a 5-minute session token",
            "tags": ["miniapp", "auth"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["initData"],
                "properties": {"initData": {"type": "string",
                                            "description": "Telegram.WebApp.initData"}},
            }}}},
            "responses": {
                "200": {"description": "a session",
                        "content": {"application/json": {"schema": session}}},
                "400": error,  # not JSON, or no initData string
                "401": error,  # initData unsigned, forged or too old
                "503": error,  # no bot token configured: initData cannot be verified
            },
        }},
    }  # fmt: skip
    if demo:
        paths["/auth/demo"] = {"post": {
            "operationId": "miniapp_post_demo",
            "summary": "levibot demo only: trade the printed link's one-time token for an admin "
                       "session (from this machine only); with no token, renew it by cookie",
            "tags": ["miniapp", "auth"],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"token": {"type": "string",
                                         "description": "the #demo= token of the link"}},
            }}}},
            "responses": {
                "200": {"description": "an admin session",
                        "content": {"application/json": {"schema": session}}},
                "400": error,  # not JSON
                "401": error,  # wrong or spent token, no renewal cookie
                "403": error,  # not from this machine, through a proxy, or a foreign Host
            },
        }}  # fmt: skip
    return paths

"""The Mini App's HTTP routes, mounted into the gateway's aiohttp application.

``GET /app`` serves the page, ``/app/static/*`` its script and styles, and
``POST /auth/telegram`` trades a verified ``initData`` for a short-lived session token that the
gateway's ``/ws`` and REST routes accept as ``Authorization: Bearer``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from sidecars.miniapp.initdata import InitDataError, verify_init_data
from sidecars.miniapp.session import TOKEN_TTL_S, issue_session_token

STATIC_DIR = Path(__file__).parent / "static"
#: Telegram's own script; included in the page only when an operator put a copy here.
TELEGRAM_JS = "telegram-web-app.js"
_PLACEHOLDER = "<!--TELEGRAM_WEB_APP_JS-->"
#: The assets ``/app/static/{filename}`` serves: a script or a style sheet of STATIC_DIR.
_MEDIA = {".js": "text/javascript", ".css": "text/css"}
ASSET_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.(js|css)$"
_ASSET = re.compile(ASSET_PATTERN)

_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'"
    ),
}


class AuthRequest(msgspec.Struct, forbid_unknown_fields=False):
    """The body of ``POST /auth/telegram``."""

    initData: str


_auth_decoder = msgspec.json.Decoder(AuthRequest)


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
) -> None:
    """Add ``GET /app``, ``/app/static/*`` and ``POST /auth/telegram`` to ``app``."""
    if not session_secret:
        raise ValueError("session_secret must not be empty")
    page = render_page()

    async def get_app(request: web.Request) -> web.Response:
        """Serve the Telegram Mini App page."""
        return web.Response(text=page, content_type="text/html", headers=_HTML_HEADERS)

    async def get_asset(request: web.Request) -> web.StreamResponse:
        """Serve a script or style sheet of the Mini App."""
        name = request.match_info["filename"]
        path = STATIC_DIR / name
        if not _ASSET.fullmatch(name) or not path.is_file():
            return _error(404, "not_found", f"no asset {name!r}")
        media = _MEDIA[path.suffix]
        return web.FileResponse(path, headers={"Content-Type": f"{media}; charset=utf-8"})

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
        user = {
            k: init.user[k]
            for k in ("id", "first_name", "last_name", "username", "language_code")
            if k in init.user
        }
        return web.json_response(
            {"token": token, "user": user, "admin": admin, "expires_in": TOKEN_TTL_S},
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get("/app", get_app)
    app.router.add_get("/app/static/{filename}", get_asset)
    app.router.add_post("/auth/telegram", post_auth)


def openapi_paths(error_ref: str) -> dict[str, dict[str, Any]]:
    """Return the OpenAPI paths of these routes; ``error_ref`` points at the error schema."""
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
    return {
        "/app": {"get": {
            "operationId": "miniapp_get_app", "summary": "The Telegram Mini App page",
            "tags": ["miniapp"],
            "responses": {"200": {"description": "the page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
        "/app/static/{filename}": {"get": {
            "operationId": "miniapp_get_asset", "summary": "A script or style sheet of the page",
            "tags": ["miniapp"],
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": ASSET_PATTERN}}],
            "responses": {
                "200": {"description": "the asset", "content": {
                    media: {"schema": {"type": "string"}} for media in _MEDIA.values()}},
                "404": error,
            },
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

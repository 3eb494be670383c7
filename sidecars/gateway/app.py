"""The aiohttp application: REST routes behind the guard, ``/ws``, ``/openapi.json``, Mini App."""

from __future__ import annotations

import importlib
import importlib.util
import math
from typing import Any

import anyio
import msgspec
from aiohttp import web

from sidecars.gateway import openapi
from sidecars.gateway.auth import AuthError, Principal
from sidecars.gateway.errors import ApiError, Handler, error_middleware
from sidecars.gateway.forwarded import forwarded_middleware, parse_networks
from sidecars.gateway.requestmetrics import request_metrics_middleware
from sidecars.gateway.rest import ROUTES
from sidecars.gateway.restore import ORDER_LOOKUP, OrderLookup, restore
from sidecars.gateway.routing import Route
from sidecars.gateway.services import PRINCIPAL, SERVICES, Services
from sidecars.gateway.ws import Session
from sidecars.gateway.wsupgrade import check_upgrade

MINIAPP_MODULE = "sidecars.miniapp.routes"
_ERROR_REF = "#/components/schemas/ErrorBody"  # the Mini App's errors have the same shape
_UNLIMITED = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes are never limited


class Document:
    """The OpenAPI document, built on its first request.

    It describes ``POST /retrain``'s options from ``levibot.ml.train``, whose import (ONNX)
    would otherwise cost every gateway start most of a second.
    """

    def __init__(self, extra_paths: dict[str, dict[str, Any]]) -> None:
        self.extra_paths = extra_paths
        self._body: bytes | None = None

    def build(self) -> bytes:
        """Return the encoded document (blocking: imports the ML package)."""
        return msgspec.json.encode(openapi.build(ROUTES, self.extra_paths, openapi.train_options()))

    async def get(self) -> bytes:
        """Return the encoded document, building it in a worker thread the first time."""
        if self._body is None:
            self._body = await anyio.to_thread.run_sync(self.build)
        return self._body


OPENAPI = web.AppKey("openapi", Document)


async def _limit(services: Services, *limits: tuple[str, int]) -> None:
    retry = await services.limiter.hit(*limits)
    if retry is not None:
        services.rate_limited.inc()
        raise ApiError(
            429, "rate_limited", f"too many requests; retry in {math.ceil(retry)} s",
            headers={"Retry-After": str(math.ceil(retry))},
        )  # fmt: skip


async def authorize(
    request: web.Request, services: Services, scope: str, *, allow_query_token: bool = False
) -> Principal:
    """Return the caller if it holds ``scope``: 401 without a valid credential, 403 without it.

    Every request counts against its IP's limit, failed ones included (guessing keys is
    throttled); an authenticated one also against its key's, in the same round trip.
    """
    config = services.config
    by_ip = (f"ip:{request.remote}", config.rate_limit_per_ip)
    try:
        who = await services.auth.request(request, allow_query_token=allow_query_token)
    except AuthError as exc:
        await _limit(services, by_ip)
        status = 403 if exc.code == "ip_not_allowed" else 401
        raise ApiError(
            status, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"}
        ) from None
    if scope not in who.scopes:
        await _limit(services, by_ip)
        raise ApiError(403, "insufficient_scope", f"this route needs the {scope!r} scope")
    await _limit(services, by_ip, (f"key:{who.subject}", config.rate_limit_per_key))
    request[PRINCIPAL] = who
    return who


def guard(route: Route) -> Handler:
    """Wrap a route's handler with authentication, its scope and the rate limits."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        if route.scope is not None:
            await authorize(request, services, route.scope)
        elif route.path not in _UNLIMITED:
            await _limit(services, (f"ip:{request.remote}", services.config.rate_limit_per_ip))
        return await route.handler(request)

    guarded.__name__ = route.handler.__name__
    return guarded


async def websocket(request: web.Request) -> web.StreamResponse:
    """Serve ``/ws``: authenticate, upgrade, run the session, close with the session's code."""
    services = request.app[SERVICES]
    config = services.config
    who = await authorize(request, services, "read", allow_query_token=True)
    check_upgrade(request.headers)
    ws = web.WebSocketResponse(max_msg_size=config.ws_max_frame, autoping=True)
    if not ws.can_prepare(request).ok:  # e.g. a Connection header llhttp does not accept
        raise ApiError(400, "not_websocket", "this endpoint needs a websocket upgrade")
    await ws.prepare(request)
    client = services.hub.connect(who.subject)
    try:
        await Session(ws, client, services.hub, services.models, services.now_ns,
                      config.heartbeat_s).run()  # fmt: skip
    finally:
        services.hub.disconnect(client)
        with anyio.move_on_after(config.ws_close_timeout_s, shield=True):
            await ws.close(code=client.close_code, message=client.close_reason.encode())
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.abort()  # a client that never reads never acknowledges the close either
    return ws


async def _restore_read_models(app: web.Application) -> None:
    """Load what the store has into the read models before the first request (CQRS)."""
    services = app[SERVICES]
    await restore(services.models, services.config.postgres_dsn, services.log)


async def _close_websockets(app: web.Application) -> None:
    app[SERVICES].hub.close_all(1001, "server shutting down")


def _mount_miniapp(app: web.Application, services: Services) -> dict[str, dict[str, Any]]:
    """Mount ``sidecars.miniapp`` when it is installed; return the OpenAPI paths of its routes."""
    if importlib.util.find_spec("sidecars.miniapp") is None or (
        importlib.util.find_spec(MINIAPP_MODULE) is None
    ):
        services.log.info("gateway.miniapp_absent", module=MINIAPP_MODULE)
        return {}
    module = importlib.import_module(MINIAPP_MODULE)
    options = services.miniapp
    module.setup_routes(
        app, bot_token=options.bot_token, session_secret=options.session_secret,
        max_age_s=options.max_age_s, admin_user_ids=options.admin_user_ids,
        demo_token_sha256=options.demo_token_sha256,
    )  # fmt: skip
    demo = bool(options.demo_token_sha256)  # POST /auth/demo is mounted (levibot demo)
    paths: dict[str, dict[str, Any]] = module.openapi_paths(_ERROR_REF, demo=demo)
    return paths


def create_app(services: Services) -> web.Application:
    """Return the gateway's aiohttp application."""
    trusted = parse_networks(services.config.trusted_proxies)
    app = web.Application(
        # The client's address first: rate limits, the allow-list and the audit log read it.
        middlewares=[
            request_metrics_middleware(services.metrics),  # outermost: the status sent
            forwarded_middleware(trusted),
            error_middleware,
        ],
        client_max_size=services.config.max_body_bytes,
    )
    app[SERVICES] = services
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guard(route))
    app.router.add_get("/ws", websocket)
    app[OPENAPI] = Document(_mount_miniapp(app, services))

    async def document(request: web.Request) -> web.Response:
        body = await request.app[OPENAPI].get()
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/openapi.json", document)
    if services.config.postgres_dsn:
        app.on_startup.append(_restore_read_models)
        app[ORDER_LOOKUP] = lookup = OrderLookup(services.config.postgres_dsn)
        app.on_cleanup.append(lambda _: lookup.close())
    app.on_shutdown.append(_close_websockets)
    return app

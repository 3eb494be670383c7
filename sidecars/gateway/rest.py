"""The REST API: handlers and the route table the app, the guard and the OpenAPI document share."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from levibot import valuation
from levibot.messages import (
    CLIENT_ORDER_ID,
    CancelOrder,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    StartStrategy,
    StopStrategy,
    SubmitOrder,
)
from sidecars.gateway import schemas as s
from sidecars.gateway.auth import COOKIE_NAME, AuthError, ip_allowed
from sidecars.gateway.charts import ChartView
from sidecars.gateway.errors import ApiError, decode_body
from sidecars.gateway.ml_routes import ML_ROUTES
from sidecars.gateway.redisguard import RedisUnavailable
from sidecars.gateway.restore import ORDER_LOOKUP
from sidecars.gateway.routing import (
    NAME,
    Param,
    Route,
    accepted,
    audit,
    ok,
    path_name,
    principal,
    read_body,
    send_command,
    svc,
)
from sidecars.gateway.services import Services

# --- operations -------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return ok(s.Health(status="ok"))


async def ready(request: web.Request) -> web.Response:
    services = svc(request)
    body = s.Ready(
        ready=services.ready,
        clients=len(services.hub.clients),
        messages_seen=services.models.messages_seen,
    )
    return ok(body, 200 if services.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=svc(request).metrics.render(), content_type="text/plain")


# --- auth -------------------------------------------------------------------------------------


async def auth_token(request: web.Request) -> web.Response:
    body: s.TokenRequest = await read_body(request, s.TokenRequest)
    services = svc(request)
    try:
        who = await services.auth.api_key(body.api_key)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    record = await services.auth.keys.get(who.subject)
    pair = await services.ledger.issue(who.subject, record.scopes if record else ())
    return ok(msgspec.structs.asdict(pair))


async def auth_refresh(request: web.Request) -> web.Response:
    body: s.RefreshRequest = await read_body(request, s.RefreshRequest)
    services = svc(request)
    try:
        pair = await services.ledger.refresh(body.refresh_token)
    except AuthError as exc:
        if exc.code == "refresh_reused":
            services.audit.record("unknown", request.remote, "token.reuse_detected", "refused")
        raise ApiError(401, exc.code, exc.message) from None
    return ok(msgspec.structs.asdict(pair))


async def auth_revoke(request: web.Request) -> web.Response:
    body: s.RevokeRequest = await read_body(request, s.RevokeRequest)
    services = svc(request)
    revoked = await services.ledger.revoke(body.token)
    if revoked:
        services.audit.record("unknown", request.remote, "token.revoke")
    # As RFC 7009: a token that names nothing is not an error; the caller's aim is met.
    return ok(s.RevokeResponse(revoked=revoked))


async def auth_cookie(request: web.Request) -> web.Response:
    services, who = svc(request), principal(request)
    cookie = services.cookie
    if not ip_allowed(request.remote, cookie.allowlist):
        audit(request, "cookie.issue", outcome="refused")
        raise ApiError(403, "ip_not_allowed", "admin cookies are issued only to allowlisted IPs")
    response = ok(s.CookieResponse(expires_in=cookie.ttl_s))
    response.set_cookie(
        COOKIE_NAME, cookie.make(who.key_id or who.subject), max_age=cookie.ttl_s,
        httponly=True, samesite="Strict", secure=services.config.cookie_secure,
    )  # fmt: skip
    audit(request, "cookie.issue")
    return response


# --- trading ----------------------------------------------------------------------------------


async def submit_order(request: web.Request) -> web.Response:
    body: s.OrderRequest = await read_body(request, s.OrderRequest)
    services = svc(request)
    cmd = await send_command(
        request, SubmitOrder, symbol=body.symbol, side=body.side, quantity=body.quantity,
        price=body.price,
    )  # fmt: skip
    assert isinstance(cmd, SubmitOrder)
    state = services.models.submitted(cmd)
    out = s.OrderSubmitted(client_order_id=state.client_order_id, command_id=cmd.command_id)
    return ok(out, 202, {"Location": f"/orders/{state.client_order_id}"})


async def get_order(request: web.Request) -> web.Response:
    coid = request.match_info["client_order_id"]
    state = svc(request).models.orders.get(coid)
    if state is None and (lookup := request.app.get(ORDER_LOOKUP)) is not None:
        state = await lookup.get(coid)  # older than the views hold: PostgreSQL has it
    if state is None:
        raise ApiError(404, "order_not_found", "no such order")
    return ok(state)


async def cancel_order(request: web.Request) -> web.Response:
    """Ask the order actor to cancel an open order (``CancelOrder``); it answers on the bus."""
    coid = request.match_info["client_order_id"]
    if not CLIENT_ORDER_ID.fullmatch(coid):
        raise ApiError(400, "invalid_client_order_id", f"must match {CLIENT_ORDER_ID.pattern}")
    cmd = await send_command(request, CancelOrder, client_order_id=coid)
    audit(request, "order.cancel", client_order_id=coid, command_id=cmd.command_id)
    return ok(accepted(cmd), 202)


async def start_strategy(request: web.Request) -> web.Response:
    name = path_name(request, "name")
    raw = await request.read()
    body = decode_body(raw, s.StrategyStart) if raw else s.StrategyStart()
    # Like an unknown strategy name, parameters the strategy refuses are the scoring actor's
    # to judge: it answers with a ``strategy.bad_params`` alert and does not start it.
    cmd = await send_command(request, StartStrategy, strategy=name, params=dict(body.params))
    audit(request, "strategy.start", strategy=name, params=body.params, command_id=cmd.command_id)
    return ok(accepted(cmd), 202)


async def stop_strategy(request: web.Request) -> web.Response:
    name = path_name(request, "name")
    cmd = await send_command(request, StopStrategy, strategy=name)
    audit(request, "strategy.stop", strategy=name, command_id=cmd.command_id)
    return ok(accepted(cmd), 202)


async def portfolio_summary(request: web.Request) -> web.Response:
    snap = svc(request).models.portfolio
    if snap is None:
        return ok(s.PortfolioSummary(snapshot=None, open_positions=0, gross_exposure=0.0))
    exposure = valuation.gross_exposure(
        valuation.Marked(p.quantity, valuation.mark(p.last_price, p.avg_price))
        for p in snap.positions
    )
    body = s.PortfolioSummary(
        snapshot=msgspec.to_builtins(snap),
        open_positions=sum(1 for p in snap.positions if p.quantity != 0),
        gross_exposure=exposure,
    )
    return ok(body)


async def features(request: web.Request) -> web.Response:
    symbol = path_name(request, "symbol")
    services = svc(request)
    store = services.feature_store
    if store is not None:
        doc = await _from_redis(services, lambda: store.get(symbol))
        if doc is None:
            raise ApiError(404, "no_features", f"no features stored for {symbol}")
        return ok(s.FeaturesView(symbol=symbol, source="redis", features=doc))
    last = services.models.features.get(symbol)
    if last is None:
        raise ApiError(404, "no_features", f"no features seen for {symbol}")
    from levibot.storage.feature_store import to_document

    return ok(s.FeaturesView(symbol=symbol, source="memory", features=to_document(last)))


async def _from_redis(services: Services, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Return ``await fn()`` through the Redis breaker; 503 while Redis is down."""
    assert services.breaker is not None  # set whenever a Redis-backed store is
    try:
        return await services.breaker.call(fn)
    except RedisUnavailable:
        raise ApiError(
            503,
            "feature_store_unavailable",
            "the online feature store (Redis) is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        ) from None


async def recent_signals(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_limit", "limit must be between 1 and 1000")
    symbol = request.query.get("symbol") or None
    signals = svc(request).models.recent_signals(limit, symbol)
    return ok(s.SignalsResponse(signals=[msgspec.to_builtins(x) for x in signals]))


async def charts(request: web.Request) -> web.Response:
    query = request.query
    try:
        limit = int(query.get("limit", "300"))
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "invalid_limit", "limit must be between 1 and 500")
    symbol, timeframe = query.get("symbol"), query.get("timeframe")
    for name, value in (("symbol", symbol), ("timeframe", timeframe)):
        if value is not None and not NAME.match(value):
            raise ApiError(400, f"invalid_{name}", f"{name} must match {NAME.pattern}")
    models = svc(request).models
    return ok(models.charts.view(symbol, models.signals, timeframe=timeframe, limit=limit))


async def get_risk(request: web.Request) -> web.Response:
    models = svc(request).models
    denials = Tally(o.code for o in models.orders.values() if o.status == "denied")
    status = models.risk_status
    if status is not None:
        return ok(
            s.RiskView(
                kill_switch=status.kill_switch, trading_state=status.trading_state.value,
                policy=status.policy, recent_denials=dict(denials), source="risk",
                equity=status.equity, peak_equity=status.peak_equity, drawdown=status.drawdown,
                day_trades=status.day_trades,
            )
        )  # fmt: skip
    r = models.risk
    body = s.RiskView(
        kill_switch=r.kill_switch, trading_state=r.trading_state, policy=r.policy,
        recent_denials=dict(denials),
    )  # fmt: skip
    return ok(body)


async def put_risk(request: web.Request) -> web.Response:
    body: s.RiskUpdate = await read_body(request, s.RiskUpdate)  # sets at least one of the two
    services, cmds = svc(request), []
    if body.policy is not None:
        cmds.append(await send_command(request, SetRiskPolicy, policy=body.policy))
        services.models.risk.policy = body.policy
    if body.trading_state is not None:
        cmds.append(await send_command(request, SetTradingState, state=body.trading_state))
        services.models.risk.trading_state = body.trading_state.value
    services.models.risk.updated_ns = services.now_ns()
    audit(
        request, "risk.update", policy=body.policy,
        trading_state=None if body.trading_state is None else body.trading_state.value,
        command_ids=[c.command_id for c in cmds],
    )  # fmt: skip
    return ok(s.RiskUpdated(commands=[accepted(c) for c in cmds]), 202)


async def killswitch(request: web.Request) -> web.Response:
    body: s.KillSwitchRequest = await read_body(request, s.KillSwitchRequest)
    cmd = await send_command(request, SetKillSwitch, on=body.on)
    services = svc(request)
    services.models.risk.kill_switch = body.on
    services.models.risk.updated_ns = services.now_ns()
    audit(request, "killswitch.set", on=body.on, command_id=cmd.command_id)
    return ok(accepted(cmd), 202)


_SYMBOL = Param("symbol", "path", {"type": "string", "pattern": NAME.pattern})
_STRATEGY = Param("name", "path", {"type": "string", "pattern": NAME.pattern})

#: Every REST route; ``/ws`` and ``/openapi.json`` are added by the app factory.
ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", health, "Liveness probe", None, response=s.Health, tag="ops"),
    Route("GET", "/ready", ready, "Readiness probe (503 until started)", None,
          response=s.Ready, tag="ops", errors=(503,)),
    Route("GET", "/metrics", metrics, "Prometheus metrics", None, tag="ops", media="text/plain"),
    Route("POST", "/auth/token", auth_token, "Exchange an API key for tokens", None,
          body=s.TokenRequest, response=s.TokenResponse, tag="auth", errors=(401,)),
    Route("POST", "/auth/refresh", auth_refresh, "Rotate a refresh token (single use)", None,
          body=s.RefreshRequest, response=s.TokenResponse, tag="auth", errors=(401,)),
    Route("POST", "/auth/revoke", auth_revoke, "Revoke a token's family (sign out)", None,
          body=s.RevokeRequest, response=s.RevokeResponse, tag="auth"),
    Route("POST", "/auth/cookie", auth_cookie, "Set the admin cookie (allowlisted IPs)", "admin",
          response=s.CookieResponse, tag="auth"),
    *ML_ROUTES,
    Route("POST", "/orders", submit_order, "Submit a manual order (through risk)", "trade",
          body=s.OrderRequest, response=s.OrderSubmitted, status=202, tag="trading"),
    Route("GET", "/orders/{client_order_id}", get_order, "An order's state", "read",
          params=(Param("client_order_id", "path", {"type": "string"}),), tag="trading",
          errors=(404,)),
    Route("POST", "/orders/{client_order_id}/cancel", cancel_order,
          "Cancel an open order (command to the order actor)", "trade",
          params=(Param("client_order_id", "path", {"type": "string"}),),
          response=s.CommandAccepted, status=202, tag="trading", errors=(400,)),
    Route("POST", "/strategies/{name}/start", start_strategy, "Start a strategy (command)",
          "admin", body=s.StrategyStart, body_required=False, response=s.CommandAccepted,
          status=202, params=(_STRATEGY,), tag="trading"),
    Route("POST", "/strategies/{name}/stop", stop_strategy, "Stop a strategy (command)",
          "admin", response=s.CommandAccepted, status=202, params=(_STRATEGY,), tag="trading"),
    Route("GET", "/portfolio/summary", portfolio_summary, "The latest portfolio", "read",
          response=s.PortfolioSummary, tag="trading"),
    Route("GET", "/features/{symbol}", features, "A symbol's latest features", "read",
          response=s.FeaturesView, params=(_SYMBOL,), tag="trading", errors=(404, 503)),
    Route("GET", "/signals/recent", recent_signals, "Recent signals", "read",
          response=s.SignalsResponse, tag="trading", params=(
              Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                    required=False),
              Param("symbol", "query", {"type": "string"}, required=False))),
    Route("GET", "/charts", charts, "Candles with their signals and fills, and the equity "
          "history (the Mini App's charts)", "read", response=ChartView, tag="trading", params=(
              Param("symbol", "query", {"type": "string", "pattern": NAME.pattern},
                    required=False, description="default: the symbol of the latest bar"),
              Param("timeframe", "query", {"type": "string", "pattern": NAME.pattern},
                    required=False, description="default: that of the symbol's latest bar"),
              Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500},
                    required=False, description="bars, default 300"))),
    Route("GET", "/risk", get_risk, "Risk controls", "read", response=s.RiskView, tag="risk"),
    Route("PUT", "/risk", put_risk, "Set exit policy / trading state (commands)", "admin",
          body=s.RiskUpdate, response=s.RiskUpdated, status=202, tag="risk"),
    Route("POST", "/killswitch", killswitch, "Turn the kill switch on or off (command)", "admin",
          body=s.KillSwitchRequest, response=s.CommandAccepted, status=202, tag="risk"),
)  # fmt: skip

"""The OpenAPI 3.1 document, generated from the route table and the msgspec schemas."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from sidecars.gateway import ws, wsupgrade
from sidecars.gateway.errors import ErrorBody
from sidecars.gateway.routing import Route

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([^}/]+)}")

_DESCRIPTION = (
    "levibot's trader gateway: REST API and the websocket `/ws`.\n\n"
    "Authentication: `POST /auth/token` with an API key (`levibot keys create`) returns a JWT "
    "access token (5 minutes) and a single-use refresh token; send `Authorization: Bearer "
    "<token>` or `X-API-Key: lb_...`. Scopes: read, trade, admin (admin implies trade and read). "
    "Rate-limited requests get 429 with `Retry-After`. Errors are "
    '`{"error": {"code": ..., "message": ...}}`.\n\n'
    "While Redis is down, rate limits are counted per gateway process and "
    "`GET /features/{symbol}` answers 503 `feature_store_unavailable`; every other route "
    "keeps working.\n\n"
    "## Websocket protocol\n"
    + (ws.__doc__ or "").split("Protocol (JSON text frames)\n" + "=" * 27, 1)[-1]
)


_RETRY_AFTER = {
    "description": "seconds until the current rate-limit window ends",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def _operation(route: Route, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "summary": route.summary,
        "tags": [route.tag],
    }
    params = [
        {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema}
        | ({"description": p.description} if p.description else {})
        for p in route.params
    ]
    declared = {p.name for p in route.params if p.where == "path"}
    for name in _PATH_PARAM.findall(route.path):
        if name not in declared:
            params.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": refs[route.body]}},
        }
    if route.media == "application/json":
        schema = refs[route.response] if route.response is not None else {"type": "object"}
    else:
        schema = {"type": "string"}
    error = {"description": "error", "content": {"application/json": {"schema": refs[ErrorBody]}}}
    responses: dict[str, Any] = {
        str(route.status): {"description": "success", "content": {route.media: {"schema": schema}}}
    }
    codes = set(route.errors)
    if route.body is not None or route.params:
        codes |= {400, 422}
    if route.body is not None:
        codes.add(413)  # larger than [gateway] max_body_bytes
    if route.scope is not None:
        codes |= {401, 403}
        op["security"] = [{"bearer": []}, {"apiKey": []}, {"adminCookie": []}]
    if route.scope is not None or route.tag == "auth":
        codes.add(429)
    for code in sorted(codes):
        responses[str(code)] = error
    if 429 in codes:
        responses["429"] = error | {"headers": {"Retry-After": _RETRY_AFTER}}
    op["responses"] = responses
    if route.scope is not None:
        op["x-scope"] = route.scope
    return op


def train_options() -> type | None:
    """Return ``TrainConfig`` (what ``POST /retrain`` accepts), None without the ML libraries."""
    try:
        from levibot.ml.train import TrainConfig
    except ImportError:
        return None
    return TrainConfig


def build(
    routes: tuple[Route, ...],
    extra_paths: dict[str, dict[str, Any]] | None = None,
    options: type | None = None,
) -> dict[str, Any]:
    """Return the OpenAPI document of ``routes`` (plus ``extra_paths`` mounted by others).

    ``options`` is the type of ``RetrainRequest.options`` (``train_options()``); without it the
    document says only "an object".
    """
    types = (
        {ErrorBody}
        | {r.body for r in routes if r.body}
        | {r.response for r in routes if r.response}
        | ({options} if options is not None else set())
    )
    ordered = sorted(types, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    refs = dict(zip(ordered, schemas, strict=True))
    for type_ in ordered:  # constraints between fields (see ``schemas``)
        components[type_.__name__].update(getattr(type_, "openapi", {}))
    if options is not None and "RetrainRequest" in components:
        components["RetrainRequest"]["properties"]["options"] = refs[options] | {"default": {}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    error = {"application/json": {"schema": refs[ErrorBody]}}
    paths.setdefault("/ws", {})["get"] = {
        "operationId": "get_ws",
        "summary": "Trader websocket (upgrade); protocol in info.description",
        "tags": ["stream"],
        "parameters": wsupgrade.parameters(),
        "security": [{"bearer": []}, {"apiKey": []}, {"adminCookie": []}, {"queryToken": []}],
        "x-scope": "read",
        "responses": {
            "101": {"description": "switching protocols"},
            "400": {"description": "not a websocket upgrade", "content": error},
            "401": {"description": "unauthenticated", "content": error},
            "403": {"description": "no read scope, or a cookie from outside the allowlist",
                    "content": error},
            "429": {"description": "rate limited", "content": error,
                    "headers": {"Retry-After": _RETRY_AFTER}},
        },
    }  # fmt: skip
    paths.setdefault("/openapi.json", {})["get"] = {
        "operationId": "get_openapi",
        "summary": "This document",
        "tags": ["ops"],
        "responses": {"200": {
            "description": "OpenAPI 3.1",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }},
    }  # fmt: skip
    for path, ops in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(ops)
    return {
        "openapi": "3.1.0",
        "info": {"title": "levibot gateway", "version": "1", "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "adminCookie": {"type": "apiKey", "in": "cookie", "name": "lb_admin"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }

"""What every REST handler uses: the route description, JSON responses, the caller, the body,
and commands sent and audited on the caller's behalf."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from levibot.messages import Command
from sidecars.gateway import schemas as s
from sidecars.gateway.auth import Principal
from sidecars.gateway.errors import ApiError, decode_body
from sidecars.gateway.services import PRINCIPAL, SERVICES, Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Param:
    """A path or query parameter, for the OpenAPI document."""

    name: str
    where: str  # "path" | "query"
    schema: dict[str, Any]
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path, handler, required scope (None: public) and its schemas."""

    method: str
    path: str
    handler: Handler
    summary: str
    scope: str | None
    body: type | None = None
    response: type | None = None
    status: int = 200
    params: tuple[Param, ...] = ()
    tag: str = "api"
    media: str = "application/json"
    errors: tuple[int, ...] = ()
    body_required: bool = True  # False: an empty body means the body type's defaults


def ok(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Return ``value`` as a JSON response."""
    return web.Response(
        body=_json.encode(value), status=status, content_type="application/json", headers=headers
    )


def svc(request: web.Request) -> Services:
    """Return the gateway's services."""
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    """Return the authenticated caller (set by the guard)."""
    return request[PRINCIPAL]


def path_name(request: web.Request, key: str) -> str:
    """Return the path parameter ``key``, refused (400) unless it matches ``NAME``."""
    value = request.match_info[key]
    if not NAME.match(value):
        raise ApiError(400, f"invalid_{key}", f"{key} must match {NAME.pattern}")
    return value


async def read_body(request: web.Request, type_: type[Any]) -> Any:
    """Return the request's JSON body decoded as ``type_`` (a clear 4xx when it is not)."""
    return decode_body(await request.read(), type_)


async def send_command(request: web.Request, cmd_type: type[Command], **fields: Any) -> Command:
    """Publish a command on behalf of the caller, audit it, return it."""
    services, who = svc(request), principal(request)
    now = services.now_ns()
    cmd = cmd_type(
        ts_event=now, ts_init=now, command_id=uuid.uuid4().hex, issued_by=f"gateway:{who.subject}",
        **fields,
    )  # fmt: skip
    await services.publish(cmd)
    return cmd


def audit(request: web.Request, action: str, **detail: Any) -> None:
    """Record ``action`` by the caller in the audit log."""
    svc(request).audit.record(principal(request).subject, request.remote, action, **detail)


def accepted(cmd: Command) -> s.CommandAccepted:
    """Return the 202 body of a command sent."""
    return s.CommandAccepted(command_id=cmd.command_id, command=type(cmd).__name__)

"""JSON errors: every refusal is ``{"error": {"code": ..., "message": ...}}`` with a clear 4xx."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import structlog
from aiohttp import web

from levibot.errors import LevibotError

_log = structlog.get_logger("gateway")

T = TypeVar("T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(LevibotError):
    """A request the gateway refuses: HTTP ``status``, stable ``code``, human ``message``."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong: a stable machine ``code`` and a ``message`` for people."""

    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every error response."""

    error: ErrorDetail


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Return the JSON error response."""
    body = msgspec.json.encode(ErrorBody(error=ErrorDetail(code=code, message=message)))
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


# aiohttp raises these for routing failures; give them our shape and a stable code.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ``ApiError``, aiohttp's HTTP errors and unexpected failures into JSON errors."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, exc.reason, headers)
    except Exception:
        # A bug, not bad input: log it (without locals) and answer a generic 500.
        _log.exception("gateway.request_failed", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error; see the gateway log")


def decode_body(data: bytes, type_: type[T]) -> T:
    """Decode a JSON request body into ``type_``; raise a 400/422 ``ApiError`` when it is bad."""
    if not data:
        raise ApiError(400, "missing_body", "a JSON request body is required")
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec decodes nested containers recursively
        raise ApiError(400, "malformed_json", "request body is nested too deeply") from None

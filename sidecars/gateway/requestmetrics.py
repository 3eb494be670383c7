"""Every gateway request counted by route and status, and timed: what the gateway dashboard and
the error-rate SLO read.

The route label is the matched resource's pattern (``/orders/{client_order_id}``), never the
raw path, so the number of series stays bounded whatever clients ask for; a path that matches
nothing is ``unmatched``. The status is the one the client got: this middleware runs
outermost, after ``error_middleware`` has turned exceptions into JSON errors.
"""

from __future__ import annotations

import time

from aiohttp import web

from levibot.metrics import Counter, Metrics
from sidecars.gateway.errors import Handler

#: Request durations in seconds, 1 ms to 10 s.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def route_of(request: web.Request) -> str:
    """Return the pattern of the route ``request`` matched, or ``unmatched``."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    if resource is None or info.http_exception is not None:
        return "unmatched"
    return resource.canonical


def request_metrics_middleware(metrics: Metrics) -> web.middleware:  # type: ignore[valid-type]
    """Return a middleware counting requests in ``gateway_requests_total{route,method,code}``."""
    counters: dict[tuple[str, str, int], Counter] = {}
    seconds = metrics.histogram(
        "gateway_request_seconds", "Time to answer a request", buckets=REQUEST_BUCKETS
    )

    def count(request: web.Request, status: int) -> None:
        key = (route_of(request), request.method, status)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = metrics.counter(
                "gateway_requests_total", "Requests answered, by route, method and status",
                route=key[0], method=key[1], code=str(status),
            )  # fmt: skip
        counter.inc()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects and the like pass error_middleware
            count(request, exc.status)
            raise
        except Exception:  # error_middleware answers these; counted as what the client gets
            count(request, 500)
            raise
        count(request, response.status)
        if response.status != 101:  # a websocket's "request" lasts as long as the connection
            seconds.observe(time.perf_counter() - started)
        return response

    return middleware

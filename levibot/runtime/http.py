"""The node's own small HTTP endpoint: ``/health``, ``/ready`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from levibot.metrics import Metrics

#: The Prometheus text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeHttp:
    """Serves liveness, readiness and Prometheus metrics for one node."""

    def __init__(
        self, metrics: Metrics, health: Callable[[], dict[str, Any]], ready: Callable[[], bool]
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        """Return the aiohttp application."""
        app = web.Application()
        app.router.add_get("/health", self._on_health)
        app.router.add_get("/ready", self._on_ready)
        app.router.add_get("/metrics", self._on_metrics)
        return app

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: any free port; ``self.port`` tells which)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_health(self, request: web.Request) -> web.Response:
        return web.json_response(self._health())

    async def _on_ready(self, request: web.Request) -> web.Response:
        ready = self._ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _on_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

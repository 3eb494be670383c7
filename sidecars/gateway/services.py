"""Everything the gateway's HTTP handlers share, built by the actor in ``on_start``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from levibot.messages import Message
from levibot.metrics import Metrics
from sidecars.gateway.auth import AuditLog, Authenticator, Principal, RateLimiter, TokenService
from sidecars.gateway.jobs import JobRunner
from sidecars.gateway.readmodels import ReadModels
from sidecars.gateway.redisguard import RedisBreaker
from sidecars.gateway.ws import Hub

if TYPE_CHECKING:
    from sidecars.gateway.actor import GatewayConfig


@dataclass
class Services:
    """The gateway's shared state: config, read models, hub, auth and the bus."""

    config: GatewayConfig
    models: ReadModels
    hub: Hub
    auth: Authenticator
    tokens: TokenService
    limiter: RateLimiter
    audit: AuditLog
    jobs: JobRunner
    metrics: Metrics
    publish: Callable[[Message], Awaitable[None]]
    now_ns: Callable[[], int]
    log: Any
    redis: Any = None  # redis.asyncio.Redis when configured
    breaker: RedisBreaker | None = None  # guards every Redis call when ``redis`` is set
    #: Retraining entry point; None means ``levibot.ml.train.train_model`` (imported lazily).
    trainer: Callable[..., Any] | None = None
    ready: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)
PRINCIPAL = web.RequestKey("principal", Principal)

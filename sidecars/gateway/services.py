"""Everything the gateway's HTTP handlers share, built by the actor in ``on_start``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from levibot.messages import Message
from levibot.metrics import Counter, Metrics
from sidecars.gateway.auth import (
    AdminCookie,
    AuditLog,
    Authenticator,
    Principal,
    RateLimiter,
    TokenLedger,
    TokenService,
)
from sidecars.gateway.jobs import JobRunner
from sidecars.gateway.mlbridge import ModelBridge
from sidecars.gateway.readmodels import ReadModels
from sidecars.gateway.redisguard import RedisBreaker
from sidecars.gateway.ws import Hub

if TYPE_CHECKING:
    from levibot.storage.feature_store import FeatureStore
    from sidecars.gateway.actor import GatewayConfig


@dataclass(frozen=True)
class MiniAppOptions:
    """What ``sidecars.miniapp.routes.setup_routes`` is mounted with."""

    bot_token: str  # verifies the Mini App's initData; "" answers 503 not_configured
    session_secret: bytes  # the Mini App signs sessions the gateway verifies with it
    max_age_s: int
    admin_user_ids: frozenset[int]
    demo_token_sha256: str = ""  # ``levibot demo`` only: mounts POST /auth/demo


@dataclass
class Services:
    """The gateway's shared state: config, read models, hub, auth, the ML bridge and the bus."""

    config: GatewayConfig
    models: ReadModels
    hub: Hub
    auth: Authenticator
    tokens: TokenService  # signs and checks JWTs; ``ledger`` holds the families they belong to
    ledger: TokenLedger  # refresh families and revocations (PostgreSQL: shared by replicas)
    cookie: AdminCookie
    limiter: RateLimiter
    rate_limited: Counter  # requests refused with 429
    audit: AuditLog
    jobs: JobRunner
    ml: ModelBridge
    miniapp: MiniAppOptions
    metrics: Metrics
    publish: Callable[[Message], Awaitable[None]]
    now_ns: Callable[[], int]
    log: Any
    redis: Any = None  # redis.asyncio.Redis when configured
    breaker: RedisBreaker | None = None  # guards every Redis call when ``redis`` is set
    feature_store: FeatureStore | None = None  # the online feature store, with ``redis``
    #: Retraining entry point; None means ``levibot.ml.train.train_model`` (imported lazily).
    trainer: Callable[..., Any] | None = None
    ready: bool = False


SERVICES = web.AppKey("services", Services)
PRINCIPAL = web.RequestKey("principal", Principal)

"""The gateway sidecar as an actor: read models from the bus, an aiohttp server, commands out.

The actor's ``handle`` only updates the read models and queues one encoded frame per
subscribed websocket client (``put_nowait``; a full queue drops that client). It never awaits a
client. The HTTP server lives between ``on_start`` and ``on_stop``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from typing import Annotated, Any, ClassVar

from aiohttp import web
from msgspec import Meta

from levibot.config import Config
from levibot.messages import (
    ActivateModel,
    Alert,
    Bar,
    Features,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    RiskStatus,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Signal,
    StartStrategy,
    StopStrategy,
    SubmitOrder,
    Tick,
)
from levibot.runtime.actor import Actor, Policy, Supervision
from levibot.settings import with_storage
from sidecars.gateway.app import create_app
from sidecars.gateway.auth import (
    AdminCookie,
    AuditLog,
    Authenticator,
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    TokenService,
    open_key_store,
    open_token_ledger,
    parse_allowlist,
)
from sidecars.gateway.forwarded import parse_networks
from sidecars.gateway.jobs import JobRunner
from sidecars.gateway.mlbridge import ModelBridge
from sidecars.gateway.readmodels import ReadModels
from sidecars.gateway.redisguard import RedisBreaker
from sidecars.gateway.services import MiniAppOptions, Services
from sidecars.gateway.ws import Hub

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]


class GatewayConfig(Config, frozen=True, kw_only=True):
    """``[gateway]``: where it listens, its stores, auth and websocket limits."""

    host: str = "127.0.0.1"
    port: Port = 8080  # 0: an ephemeral port (tests); the bound one is ``GatewayActor.port``
    # Storage: empty fields come from the shared ``[storage]`` section.
    data_dir: str = ""  # "": [storage] data_dir; keys.json (no DSN) and audit.jsonl live here
    # When set: API keys, refresh-token families and revocations in PostgreSQL (migration
    # 0004), shared by every replica; else keys.json and this process's memory.
    postgres_schema: str = ""  # "": [storage]'s: the model registry's schema
    postgres_dsn: str = ""
    redis_url: str = ""  # shared rate limits and the online feature store when set
    redis_prefix: str = "levibot"
    # While Redis is down, rate limits are per process and feature reads answer 503; Redis is
    # tried again after a backoff that doubles up to redis_retry_max_s (never on every request).
    redis_timeout_s: Annotated[float, Meta(gt=0)] = 0.5
    redis_retry_max_s: Annotated[float, Meta(gt=0)] = 5.0
    models_root: str = ""  # "": <[storage] data_dir>/models
    # Auth. Secrets come from the environment: LEVIBOT__GATEWAY__JWT_SECRET, ..._KEY_PEPPER.
    jwt_secret: str = ""  # empty: a random per-process secret (tokens die with the process)
    key_pepper: str = ""  # HMAC pepper for API key hashes; must match `levibot keys create`
    access_ttl_s: Positive = 300
    refresh_ttl_s: Positive = 86_400
    admin_ip_allowlist: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # Reverse proxies (CIDRs) whose Forwarded / X-Forwarded-For name the client (an ingress);
    # from anyone else those headers are ignored. Empty: the peer's address is the client's.
    trusted_proxies: tuple[str, ...] = ()
    admin_cookie_ttl_s: Positive = 3600
    cookie_secure: bool = False  # set True behind TLS
    rate_limit_per_key: Positive = 600  # requests per window per API key / token subject
    rate_limit_per_ip: Positive = 1200  # requests per window per client IP
    rate_limit_window_s: Annotated[float, Meta(gt=0)] = 60.0
    max_body_bytes: Positive = 1 << 20
    # Websocket.
    ws_queue_size: Positive = 1024  # frames queued per client before it is dropped
    ws_max_frame: Positive = 65_536  # bytes; a larger client frame closes with 1009
    heartbeat_s: Annotated[float, Meta(ge=0)] = 15.0  # 0: no heartbeats
    ws_close_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    # Read models.
    recent_signals: Positive = 200
    max_orders: Positive = 10_000
    # Telegram Mini App (sidecars.miniapp): the bot token its initData is verified with.
    telegram_bot_token: str = ""
    miniapp_max_age_s: Positive = 86_400  # initData older than this is refused
    miniapp_admin_ids: tuple[int, ...] = ()  # Telegram user ids with admin scopes in the app
    # Set by `levibot demo` only: the SHA-256 of its printed sign-in link's one-time token
    # (sidecars.miniapp.demolink). Refused unless the gateway listens on a loopback address.
    demo_token_sha256: str = ""

    def __post_init__(self) -> None:
        parse_networks(self.trusted_proxies)  # a bad CIDR fails at start, naming it
        if self.demo_token_sha256 and not _loopback(self.host):
            raise ValueError(
                f"demo_token_sha256 needs a loopback host (127.0.0.1, ::1), not {self.host!r}: "
                "the demo sign-in link must never be reachable from another machine"
            )


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class GatewayActor(Actor[GatewayConfig]):
    """REST + websocket gateway: reads the bus into read models, changes state by commands."""

    name: ClassVar[str] = "gateway"
    consumes = (
        Tick, Bar, Features, Signal, OrderIntent, OrderDenied, OrderAccepted, Fill, OrderClosed,
        PortfolioSnapshot, Alert, RiskStatus,
    )  # fmt: skip
    emits = (
        SetKillSwitch, SetTradingState, SetRiskPolicy, StartStrategy, StopStrategy, ActivateModel,
        SubmitOrder,
    )  # fmt: skip
    config_type = GatewayConfig
    supervision = Supervision(policy=Policy.SKIP)
    mailbox_size = 16_384

    services: Services | None = None
    port: int = 0
    _runner: web.AppRunner | None = None

    def _secret(self) -> str:
        secret = self.config.jwt_secret or os.environ.get("LEVIBOT__GATEWAY__JWT_SECRET", "")
        if not secret:
            self.ctx.log.warning(
                "gateway.jwt_secret_random",
                hint="set LEVIBOT__GATEWAY__JWT_SECRET; tokens will not survive a restart",
            )
            secret = secrets.token_urlsafe(32)
        return secret

    async def _redis(self) -> Any:
        if not self.config.redis_url:
            return None
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        timeout = self.config.redis_timeout_s
        # One immediate retry replaces a pooled connection that a Redis restart closed; the
        # client's default (three, with seconds of backoff) would hold requests in an outage.
        return aioredis.from_url(
            self.config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )  # fmt: skip

    async def on_start(self) -> None:
        """Build the services and start serving HTTP on ``host:port``."""
        cfg = self.config = with_storage(
            self.config, self.ctx.storage, data_dir="", models_root="models"
        )
        secret = self._secret()
        pepper = cfg.key_pepper or os.environ.get("LEVIBOT__GATEWAY__KEY_PEPPER", "")
        redis = await self._redis()
        limiter: RateLimiter = MemoryRateLimiter(cfg.rate_limit_window_s)
        breaker = None
        if redis is not None:
            breaker = RedisBreaker(
                self.ctx.log, self.ctx.metrics, timeout_s=cfg.redis_timeout_s,
                max_backoff_s=cfg.redis_retry_max_s,
            )  # fmt: skip
            fallbacks = self.ctx.metrics.counter(
                "gateway_ratelimit_fallback_total",
                "Requests rate-limited per process because Redis was down",
            )
            shared = RedisRateLimiter(redis, cfg.rate_limit_window_s, cfg.redis_prefix)
            limiter = FallbackRateLimiter(shared, limiter, breaker, fallbacks)
        keys = await open_key_store(cfg.postgres_dsn, cfg.data_dir)
        tokens = TokenService(secret, cfg.access_ttl_s, cfg.refresh_ttl_s)
        ledger = await open_token_ledger(cfg.postgres_dsn, tokens)
        cookie = AdminCookie(
            secret, parse_allowlist(cfg.admin_ip_allowlist), cfg.admin_cookie_ttl_s
        )
        models = ReadModels(recent_signals=cfg.recent_signals, max_orders=cfg.max_orders)
        feature_store = None
        if redis is not None:
            from levibot.storage.feature_store import FeatureStore

            feature_store = FeatureStore(redis, cfg.redis_prefix)
        miniapp = MiniAppOptions(
            bot_token=cfg.telegram_bot_token or os.environ.get("LEVIBOT__TELEGRAM__TOKEN", ""),
            session_secret=secret.encode(),  # the Mini App signs sessions the gateway verifies
            max_age_s=cfg.miniapp_max_age_s,
            admin_user_ids=frozenset(cfg.miniapp_admin_ids),
            demo_token_sha256=cfg.demo_token_sha256,
        )
        services = Services(
            config=cfg,
            models=models,
            hub=Hub(self.ctx.metrics, cfg.ws_queue_size),
            auth=Authenticator(keys, ledger, cookie, pepper),
            tokens=tokens,
            ledger=ledger,
            cookie=cookie,
            limiter=limiter,
            rate_limited=self.ctx.metrics.counter(
                "gateway_rate_limited_total", "Requests refused with 429"
            ),
            audit=AuditLog(os.path.join(cfg.data_dir, "audit.jsonl"), self.ctx.log),
            jobs=JobRunner(),
            ml=ModelBridge(
                cfg.models_root, postgres_dsn=cfg.postgres_dsn, postgres_schema=cfg.postgres_schema
            ),
            miniapp=miniapp,
            metrics=self.ctx.metrics,
            publish=self.ctx.publish,
            now_ns=self.ctx.clock.now_ns,
            log=self.ctx.log,
            redis=redis,
            breaker=breaker,
            feature_store=feature_store,
        )
        self.services = services
        self._runner = web.AppRunner(create_app(services), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        services.ready = True
        self.ctx.log.info("gateway.listening", host=cfg.host, port=self.port)

    async def handle(self, msg: Message) -> None:
        """Update the read models and queue the event to subscribed clients (never awaits them)."""
        services = self.services
        if services is None:
            return
        services.models.apply(msg)
        services.hub.publish(msg)

    async def on_stop(self) -> None:
        """Close every websocket, stop the server and release the stores (idempotent)."""
        services, self.services = self.services, None
        runner, self._runner = self._runner, None
        if services is not None:
            services.ready = False
        if runner is not None:
            await runner.cleanup()
        if services is not None:
            services.jobs.close()
            await services.ml.close()
            await services.auth.keys.close()
            await services.ledger.close()
            await services.limiter.close()
            if services.redis is not None:
                await services.redis.aclose()

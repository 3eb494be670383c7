"""Request and response bodies of the REST API; the OpenAPI schemas are generated from these.

A body whose fields constrain each other (exactly one of two, at least one of two) says so in
``openapi``, JSON Schema merged into its generated schema, so that the document refuses what
the handler refuses.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from levibot.messages import TradingState

Symbol = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,32}$", description="e.g. BTCUSDT")]
NonNegative = Annotated[float, Meta(ge=0, le=1e15)]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are a 422, not silently ignored."""


class TokenRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exchange an API key for an access token and a refresh token."""

    api_key: Annotated[str, Meta(min_length=1, max_length=256)]


class RefreshRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Redeem a refresh token (single use) for a new pair."""

    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class RevokeRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Revoke the family of a refresh token or an access token (sign out everywhere)."""

    token: Annotated[str, Meta(min_length=1, max_length=4096)]


class RevokeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the token named a family, now revoked on every replica."""

    revoked: bool


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True):
    """An access token (JWT, ``expires_in`` seconds) and its single-use refresh token."""

    access_token: str
    refresh_token: str
    expires_in: int
    scopes: list[str]
    token_type: str = "bearer"


class CookieResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The admin cookie was set (``Set-Cookie: lb_admin=...``)."""

    expires_in: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness."""

    status: str


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    """Readiness: the gateway is serving and has its stores."""

    ready: bool
    clients: int
    messages_seen: int


class PredictRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A feature vector: by name (``features``) or in schema order (``values``); exactly one."""

    openapi: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"required": ["features"], "properties": {"features": {"type": "object"}}},
            {"required": ["values"], "properties": {"values": {"type": "array"}}},
        ]
    }

    features: dict[str, float] | None = None
    values: Annotated[list[float], Meta(max_length=4096)] | None = None

    def __post_init__(self) -> None:
        if (self.features is None) == (self.values is None):
            raise ValueError("give exactly one of 'features' or 'values'")


class PredictResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The active model's probability that the price goes up."""

    model_id: str
    probability: float
    side: str
    confidence: float


class RetrainData(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to train on: the real BTCUSDT 1h klines (``csv``, the default), or the bars the
    store persisted in PostgreSQL (``postgres``: ``symbol``, ``timeframe``, optional
    ``venue`` and a range of bar open times in epoch milliseconds, ``since_ms`` included,
    ``until_ms`` excluded). The job fails, saying why, when they cannot be read."""

    source: Literal["csv", "postgres"] = "csv"
    symbol: Symbol = "BTCUSDT"
    timeframe: Annotated[str, Meta(pattern=r"^[0-9]{1,4}(s|m|h|d|w)$")] = "1h"
    venue: Annotated[str, Meta(min_length=1, max_length=32)] | None = None
    since_ms: Annotated[float, Meta(ge=0, le=1e14)] | None = None
    until_ms: Annotated[float, Meta(ge=0, le=1e14)] | None = None


class RetrainRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Training options (fields of ``levibot.ml.train.TrainConfig``; the document has them)
    and, optionally, the data to train on."""

    options: dict[str, Any] = {}
    data: RetrainData | None = None


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """A background job."""

    job_id: str
    kind: str
    status: str
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str = ""


class ModelsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The models in the registry and which one is active."""

    active: str | None
    models: list[dict[str, Any]]


class ActivateModelRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Make a registered model the active one (or the shadow / canary)."""

    model_id: Annotated[str, Meta(min_length=1, max_length=128)]
    role: Literal["active", "shadow", "canary"] = "active"
    # The active role is given only to a model that passed the promotion gate at training
    # (409 ``not_promoted``), unless forced.
    force: bool = False


class CommandAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """A command was published on the bus; its owner applies it."""

    command_id: str
    command: str


class OrderRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A manual order. ``quantity`` 0 lets the risk engine size it. ``price`` is a limit, never
    a sizing price: the risk engine sizes and checks the order at the market price it knows,
    refuses a limit too far from it (``PRICE_OFF_MARKET``) or an order when it knows none
    (``NO_PRICE``), and the venue fills within the limit or closes the order unfilled; 0 = at
    market."""

    symbol: Symbol
    side: Literal["buy", "sell"]
    quantity: NonNegative = 0.0
    price: NonNegative = 0.0


class StrategyStart(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional body of a strategy start: a rule strategy's parameters
    (``{"params": {"fast": 10, "slow": 30}}``); none: as configured. Parameters the strategy
    refuses are answered by the scoring actor with a ``strategy.bad_params`` alert."""

    params: dict[str, float] = {}


class OrderSubmitted(msgspec.Struct, frozen=True, kw_only=True):
    """The order went to the risk engine; follow it at ``/orders/{client_order_id}``."""

    client_order_id: str
    command_id: str
    status: str = "submitted"


class PortfolioSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The latest portfolio snapshot with a few derived figures (null before the first one)."""

    snapshot: dict[str, Any] | None
    open_positions: int
    gross_exposure: float


class FeaturesView(msgspec.Struct, frozen=True, kw_only=True):
    """The latest feature vector of a symbol and where it came from."""

    symbol: str
    source: Literal["redis", "memory"]
    features: dict[str, Any]


class SignalsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Recent signals, oldest first."""

    signals: list[dict[str, Any]]


class RiskView(msgspec.Struct, frozen=True, kw_only=True):
    """The risk state: the risk engine's own ``RiskStatus`` when the gateway has heard one
    (``source="risk"``), else the controls last commanded through this gateway
    (``source="commanded"``); and the recent denial codes."""

    kill_switch: bool | None
    trading_state: str | None
    policy: str | None
    recent_denials: dict[str, int]
    source: str = "commanded"
    equity: float | None = None
    peak_equity: float | None = None
    drawdown: float | None = None
    day_trades: int | None = None


class RiskUpdate(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Change the exit policy and/or the trading state; each set field becomes a command."""

    openapi: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {"required": ["policy"], "properties": {"policy": {"type": "string"}}},
            {"required": ["trading_state"], "properties": {"trading_state": {"type": "string"}}},
        ]
    }

    policy: Literal["conservative", "moderate", "aggressive"] | None = None
    trading_state: TradingState | None = None

    def __post_init__(self) -> None:
        if self.policy is None and self.trading_state is None:
            raise ValueError("set 'policy' and/or 'trading_state'")


class RiskUpdated(msgspec.Struct, frozen=True, kw_only=True):
    """The commands that were published."""

    commands: list[CommandAccepted]


class KillSwitchRequest(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Turn the kill switch on or off."""

    on: bool

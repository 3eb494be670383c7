"""Gateway auth: hashed API keys, JWT access + rotating refresh tokens, the admin cookie, rate
limits and the audit log."""

from sidecars.gateway.auth.audit import AuditLog
from sidecars.gateway.auth.cookie import COOKIE_NAME, AdminCookie, ip_allowed, parse_allowlist
from sidecars.gateway.auth.guard import Authenticator, Principal
from sidecars.gateway.auth.keys import (
    SCOPES,
    ApiKey,
    ApiKeyError,
    FileKeyStore,
    KeyStore,
    new_key,
    open_key_store,
    rotate_key,
)
from sidecars.gateway.auth.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from sidecars.gateway.auth.tokens import (
    AuthError,
    Claims,
    LocalLedger,
    TokenLedger,
    TokenPair,
    TokenService,
    open_token_ledger,
)

__all__ = [
    "COOKIE_NAME",
    "SCOPES",
    "AdminCookie",
    "ApiKey",
    "ApiKeyError",
    "AuditLog",
    "AuthError",
    "Authenticator",
    "Claims",
    "FallbackRateLimiter",
    "FileKeyStore",
    "KeyStore",
    "LocalLedger",
    "MemoryRateLimiter",
    "Principal",
    "RateLimiter",
    "RedisRateLimiter",
    "TokenLedger",
    "TokenPair",
    "TokenService",
    "ip_allowed",
    "new_key",
    "open_key_store",
    "open_token_ledger",
    "parse_allowlist",
    "rotate_key",
]

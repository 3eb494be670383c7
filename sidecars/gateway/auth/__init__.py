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
)
from sidecars.gateway.auth.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from sidecars.gateway.auth.tokens import AuthError, Claims, TokenPair, TokenService

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
    "MemoryRateLimiter",
    "Principal",
    "RateLimiter",
    "RedisRateLimiter",
    "TokenPair",
    "TokenService",
    "ip_allowed",
    "new_key",
    "open_key_store",
    "parse_allowlist",
]

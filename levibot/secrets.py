"""Keep credentials out of what levibot prints: config dumps, logs, health, errors.

Credentials hide in two places: fields named for them (a token, a secret, a password, a DSN's
``password=``), and the user-info part of a URL (``nats://user:pass@host``,
``redis://:pass@host``, ``postgresql://user:pass@host/db``). ``mask_text`` masks the second
kind in any string (the password becomes ``***``, the user and the address stay, since they
are what an operator needs to see); ``mask`` walks a document and also masks whole values
under secret-named keys. The log configuration runs every event through ``mask_event``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "mask", "mask_event", "mask_text"]

MASK = "***"
#: Keys whose whole value is a secret (matched as a part of the key, any case).
SECRET_KEYS = ("token", "secret", "password", "passwd", "api_key", "apikey", "jwt")
# scheme://[user][:password]@  (the password may hold anything but "@" and "/").
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<pw>[^/\s]+)@")
# password=... in a key=value DSN (libpq style), up to the next space.
_KV_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)")


def mask_text(text: str) -> str:
    """Return ``text`` with the password of every URL and ``password=`` in it masked."""
    if "@" not in text and "password" not in text.lower():
        return text  # the common case, cheaply
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def _secret_key(key: str) -> bool:
    k = key.lower()
    return any(word in k for word in SECRET_KEYS)


def mask(value: Any, key: str = "") -> Any:
    """Return ``value`` (a JSON-like document) with every credential masked."""
    if isinstance(value, Mapping):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, key) for v in value]
    if isinstance(value, str):
        if value and _secret_key(key):
            return MASK
        return mask_text(value)
    return value


def mask_event(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: mask credentials in every string of the event."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = MASK if value and _secret_key(key) else mask_text(value)
        elif isinstance(value, Mapping | list | tuple):
            event[key] = mask(value, key)
    return event

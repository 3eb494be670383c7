"""Binance's request signature: HMAC-SHA256 of the query string, keyed by the API secret.

Binance signs ``totalParams``: the query string followed by the form body. This client sends
every parameter in the query string, so the signature covers exactly what the URL carries, in
the order written: the parameters must be encoded once, here, and sent as encoded.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

__all__ = ["encode_query", "sign", "signed_query"]


def encode_query(params: Mapping[str, object]) -> str:
    """Return ``params`` as a query string, in their order (booleans as true/false)."""
    parts: list[str] = []
    for key, value in params.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append(f"{quote(key, safe='')}={quote(text, safe='')}")
    return "&".join(parts)


def sign(secret: str, payload: str) -> str:
    """Return the hex HMAC-SHA256 of ``payload`` keyed by ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_query(secret: str, params: Mapping[str, object]) -> str:
    """Return the encoded query string with its ``signature`` appended."""
    query = encode_query(params)
    return f"{query}&signature={sign(secret, query)}"

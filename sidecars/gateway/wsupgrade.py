"""The headers a ``/ws`` upgrade request must carry, checked and documented from one table.

aiohttp's own handshake is laxer than RFC 6455 (versions 7 and 8, any text that base64-decodes
to 16 bytes after dropping stray characters); the gateway accepts exactly what its OpenAPI
document says, which is what browsers and websocket libraries send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sidecars.gateway.errors import ApiError


def _anycase(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 section 5.6.2
_LIST = r"[ \t]*,[ \t]*"

#: Header name → (regular expression its value must match, description).
UPGRADE_HEADERS: dict[str, tuple[str, str]] = {
    "Upgrade": (f"^{_anycase('websocket')}$", "websocket (any case)"),
    "Connection": (
        f"^({_TOKEN}{_LIST})*{_anycase('upgrade')}({_LIST}{_TOKEN})*$",
        "a list of tokens that includes Upgrade (any case), e.g. 'keep-alive, Upgrade'",
    ),
    "Sec-WebSocket-Version": ("^13$", "13 (RFC 6455)"),
    "Sec-WebSocket-Key": (
        "^[A-Za-z0-9+/]{21}[AQgw]==$",
        "16 random bytes in base64 (RFC 6455 section 4.1)",
    ),
}
_COMPILED = {name: re.compile(pattern) for name, (pattern, _) in UPGRADE_HEADERS.items()}


def check_upgrade(headers: Mapping[str, str]) -> None:
    """Raise a 400 ``not_websocket`` ``ApiError`` unless ``headers`` are a websocket upgrade."""
    for name, pattern in _COMPILED.items():
        value = headers.get(name)
        if value is None or not pattern.fullmatch(value):
            raise ApiError(
                400, "not_websocket",
                f"this endpoint needs a websocket upgrade: header {name} must be "
                f"{UPGRADE_HEADERS[name][1]}",
            )  # fmt: skip


def parameters() -> list[dict[str, Any]]:
    """Return the OpenAPI header parameters of the upgrade request."""
    return [
        {"name": name, "in": "header", "required": True, "description": description,
         "schema": {"type": "string", "pattern": pattern}}
        for name, (pattern, description) in UPGRADE_HEADERS.items()
    ]  # fmt: skip

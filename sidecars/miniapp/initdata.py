"""Verify a Telegram Mini App's ``initData`` exactly as Telegram's Web App documentation says.

data_check_string = every field but ``hash``, sorted by key, as ``key=value`` joined by ``\\n``
(values URL-decoded); secret_key = HMAC_SHA256(key="WebAppData", msg=bot_token);
hash = hex(HMAC_SHA256(key=secret_key, msg=data_check_string)). The data is genuine when the
hashes match (compared in constant time) and fresh when ``auth_date`` is recent enough.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from levibot.errors import LevibotError

#: The longest initData accepted; real ones are well under 1 KiB.
MAX_INIT_DATA_LEN = 4096

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UNIX_TIME = re.compile(r"[0-9]{1,12}")


class InitDataError(LevibotError):
    """``initData`` is missing, malformed, forged or stale; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class WebAppInit:
    """The verified contents of ``initData``."""

    user: dict[str, Any]
    auth_date: int
    fields: dict[str, str]  # every signed field (all but hash), URL-decoded

    @property
    def user_id(self) -> int:
        """Return the Telegram user id."""
        return int(self.user["id"])


def secret_key(bot_token: str) -> bytes:
    """Return HMAC_SHA256(key="WebAppData", msg=bot_token)."""
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def data_check_string(fields: dict[str, str]) -> str:
    """Return the sorted ``key=value`` lines of every field except ``hash``."""
    return "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "hash")


def sign(fields: dict[str, str], bot_token: str) -> str:
    """Return ``fields`` URL-encoded with their ``hash``: what Telegram would send (for tests)."""
    digest = hmac.new(secret_key(bot_token), data_check_string(fields).encode(), hashlib.sha256)
    return urlencode({**fields, "hash": digest.hexdigest()})


def _parse(init_data: str) -> dict[str, str]:
    if not init_data:
        raise InitDataError("missing", "initData is empty: open the page from Telegram")
    if len(init_data) > MAX_INIT_DATA_LEN:
        raise InitDataError("malformed", "initData is too long")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InitDataError("malformed", "initData is not a URL-encoded query string") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise InitDataError("duplicate_field", f"initData has the field {key!r} twice")
        fields[key] = value
    return fields


def verify_init_data(
    init_data: str, bot_token: str, *, max_age_s: int = 86400, now: float | None = None
) -> WebAppInit:
    """Return the verified ``initData``; raise ``InitDataError`` unless genuine and fresh."""
    fields = _parse(init_data)
    received = fields.get("hash")
    if not received:
        raise InitDataError("missing_hash", "initData carries no hash")
    # compare_digest raises TypeError on non-ASCII text: anything but a hex digest is refused
    # before it, as a forgery.
    if not _HEX_SHA256.fullmatch(received):
        raise InitDataError("bad_hash", "initData hash is not a SHA-256 hex digest")
    digest = hmac.new(secret_key(bot_token), data_check_string(fields).encode(), hashlib.sha256)
    if not hmac.compare_digest(digest.hexdigest(), received.lower()):
        raise InitDataError("bad_hash", "initData hash does not match: not signed for this bot")
    if not _UNIX_TIME.fullmatch(fields.get("auth_date", "")):
        raise InitDataError("missing_auth_date", "initData has no valid auth_date")
    auth_date = int(fields["auth_date"])
    now = time.time() if now is None else now
    if now - auth_date > max_age_s:
        raise InitDataError(
            "stale",
            f"initData is {int(now - auth_date)} s old (limit {max_age_s} s): reopen the app",
        )
    if auth_date - now > 300:  # a clock far in the future is as suspicious as a stale one
        raise InitDataError("stale", "initData auth_date lies in the future")
    try:
        user = json.loads(fields["user"])
    except (KeyError, ValueError, RecursionError):  # RecursionError: nested too deeply
        user = None
    # Telegram's user id is a JSON integer; 1.5, true, "7" or 1e400 (inf) are not ids.
    user_id = user.get("id") if isinstance(user, dict) else None
    if type(user_id) is not int:
        raise InitDataError("bad_user", "initData carries no valid user")
    signed = {k: v for k, v in fields.items() if k != "hash"}
    return WebAppInit(user=user, auth_date=auth_date, fields=signed)

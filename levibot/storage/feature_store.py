"""The online feature store: the latest ``Features`` per symbol in Redis.

One key per symbol, ``<prefix>:feat:<symbol>``, holding a JSON document::

    {"symbol", "schema_hash", "ts_event", "price", "features": {name: value}}

Names come from ``levibot.features.SCHEMA.names`` when the vector matches it, else ``f0``,
``f1``, ... (a vector from another schema still reads back, under positional names). A write
only replaces an older vector (a Lua compare on ``ts_event``), so a late replica or a replay
never moves a symbol back in time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from levibot.features import SCHEMA
from levibot.messages import Features

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(dict[str, Any])

# KEYS[1]: the key; ARGV[1]: ts_event; ARGV[2]: the document; ARGV[3]: ttl in ms (0: none).
_PUT_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], 'ts')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'doc', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


def feature_names(features: Features) -> Sequence[str]:
    """Return the names of ``features.values``: the schema's when it matches, else ``f{i}``."""
    if features.schema_hash == SCHEMA.hash and len(features.values) == len(SCHEMA.names):
        return SCHEMA.names
    return [f"f{i}" for i in range(len(features.values))]


def to_document(features: Features) -> dict[str, Any]:
    """Return the stored document of a feature vector."""
    return {
        "symbol": features.symbol,
        "schema_hash": features.schema_hash,
        "ts_event": features.ts_event,
        "price": features.price,
        "features": dict(zip(feature_names(features), features.values, strict=True)),
    }


class FeatureStore:
    """Latest feature vector per symbol in Redis (``redis.asyncio.Redis``)."""

    def __init__(self, redis: Any, prefix: str = "levibot", *, ttl_s: float = 0.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self._script = redis.register_script(_PUT_IF_NEWER)

    def key(self, symbol: str) -> str:
        """Return the Redis key of ``symbol``."""
        return f"{self.prefix}:feat:{symbol}"

    async def put(self, features: Features) -> None:
        """Store ``features`` unless a newer vector of its symbol is already there."""
        await self.put_many((features,))

    async def put_many(self, many: Iterable[Features]) -> int:
        """Store several vectors in one pipelined round trip; return how many were newer."""
        async with self.redis.pipeline(transaction=False) as pipe:
            count = 0
            for f in many:
                doc = _json.encode(to_document(f))
                await self._script(
                    keys=[self.key(f.symbol)], args=[f.ts_event, doc, self.ttl_ms], client=pipe
                )
                count += 1
            if not count:
                return 0
            results = await pipe.execute()
        return sum(int(r) for r in results)

    async def get(self, symbol: str) -> dict[str, Any] | None:
        """Return the latest document of ``symbol``, or None."""
        raw = await self.redis.hget(self.key(symbol), "doc")
        return None if raw is None else _decode.decode(raw)

    async def get_many(self, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Return the latest documents of ``symbols`` that exist."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in symbols:
                pipe.hget(self.key(s), "doc")
            raws = await pipe.execute()
        return {s: _decode.decode(r) for s, r in zip(symbols, raws, strict=True) if r is not None}

"""Per-chat subscriptions and notification settings, persisted in Redis or a JSON file.

``Subscriptions`` is the in-memory registry the bot reads on every push; every change is
written through to a ``SubscriptionStore`` so a restarted bot reloads it. Two stores:
``RedisStore`` (one hash under a key prefix, one field per chat) and ``JsonFileStore`` (one
file, replaced atomically so a crash mid-write never leaves half a file).
"""

from __future__ import annotations

import enum
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec


class NotifyKind(enum.Enum):
    """A kind of push a chat can switch on or off."""

    SIGNALS = "signals"  # Signal
    ALERTS = "alerts"  # Alert
    FILLS = "fills"  # Fill, OrderClosed
    DENIALS = "denials"  # OrderDenied


#: The notification kinds a new chat starts with.
DEFAULT_NOTIFY: frozenset[NotifyKind] = frozenset(
    {NotifyKind.SIGNALS, NotifyKind.ALERTS, NotifyKind.FILLS}
)

#: Subscribing to this pseudo symbol follows every symbol.
ALL_SYMBOLS = "*"

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


class InvalidSymbolError(ValueError):
    """A symbol the user typed is not of the form ``BTCUSDT`` (or not one we trade)."""


def normalize_symbol(text: str, allowed: frozenset[str] = frozenset()) -> str:
    """Return ``text`` as a canonical symbol (``btc/usdt`` → ``BTCUSDT``) or raise.

    ``ALL`` and ``*`` mean every symbol. When ``allowed`` is not empty, other symbols are refused.
    """
    cleaned = text.strip().upper().replace("/", "").replace("-", "").replace("_", "")
    if cleaned in {"ALL", ALL_SYMBOLS}:
        return ALL_SYMBOLS
    if not _SYMBOL_RE.fullmatch(cleaned):
        raise InvalidSymbolError(
            f"{text.strip()[:32]!r} is not a symbol; use letters and digits like BTCUSDT"
        )
    if allowed and cleaned not in allowed:
        raise InvalidSymbolError(
            f"{cleaned} is not traded here; known symbols: {', '.join(sorted(allowed))}"
        )
    return cleaned


class SubscriptionLimitError(Exception):
    """The chat already follows as many symbols as a chat may."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a chat may follow at most {limit} symbols")
        self.limit = limit


class SubscriptionStoreError(Exception):
    """The store refused a change; the change was not applied."""


class ChatSettings(msgspec.Struct, kw_only=True):
    """What one chat follows and hears about. Stored as JSON.

    ``thread_id`` is the forum topic of the chat's latest ``/subscribe`` (None: not a topic);
    pushes go there. Entries stored before it existed load with None.
    """

    chat_id: int
    user_id: int = 0
    symbols: list[str] = msgspec.field(default_factory=list)
    notify: list[str] = msgspec.field(
        default_factory=lambda: sorted(k.value for k in DEFAULT_NOTIFY)
    )
    thread_id: int | None = None

    def wants(self, kind: NotifyKind, symbol: str | None = None) -> bool:
        """Return True when this chat should hear about ``kind`` (for ``symbol``, if any)."""
        if kind.value not in self.notify or not self.symbols:
            return False
        return symbol is None or ALL_SYMBOLS in self.symbols or symbol in self.symbols


class SubscriptionStore(Protocol):
    """Where ``Subscriptions`` persists chat settings."""

    #: What the last ``load`` could not read (and set aside), in words for the log.
    problems: list[str]

    async def load(self) -> dict[int, ChatSettings]:
        """Return every readable stored chat; record what was unreadable in ``problems``."""
        ...

    async def save(self, settings: ChatSettings, everything: dict[int, ChatSettings]) -> None:
        """Persist ``settings`` (``everything`` is the whole registry, for whole-file stores)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_decoder = msgspec.json.Decoder(ChatSettings)
_list_decoder = msgspec.json.Decoder(list[ChatSettings])


class JsonFileStore:
    """Every chat in one JSON file, replaced atomically on each change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.problems: list[str] = []

    async def load(self) -> dict[int, ChatSettings]:
        self.problems = []
        try:
            data = await anyio.Path(self.path).read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return {s.chat_id: s for s in _list_decoder.decode(data)}
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Keep the bad file for a human and start empty rather than not at all.
            aside = self.path.with_name(self.path.name + ".corrupt")
            await anyio.Path(self.path).rename(aside)
            self.problems.append(f"{self.path} is unreadable ({exc}); moved to {aside}")
            return {}

    async def save(self, settings: ChatSettings, everything: dict[int, ChatSettings]) -> None:
        payload = msgspec.json.encode(sorted(everything.values(), key=lambda s: s.chat_id))
        await anyio.to_thread.run_sync(self._write, payload)

    def _write(self, payload: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def close(self) -> None:
        pass


class RedisStore:
    """Every chat as one field of the hash ``<prefix>chats`` in Redis."""

    def __init__(self, url: str, prefix: str, *, timeout_s: float = 5.0) -> None:
        import redis.asyncio as aioredis  # imported lazily: only this store needs it
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Bounded waits and one immediate retry (it replaces a pooled connection a Redis restart
        # closed): a Redis that is down fails a change at once instead of holding the chat.
        self._redis: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self.key = f"{prefix}chats"
        self.problems: list[str] = []

    async def load(self) -> dict[int, ChatSettings]:
        self.problems = []
        raw: dict[bytes, bytes] = await self._redis.hgetall(self.key)
        chats: dict[int, ChatSettings] = {}
        for field, value in raw.items():
            try:
                settings = _decoder.decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.problems.append(f"{self.key}[{field!r}] is unreadable ({exc}); skipped")
                continue
            chats[settings.chat_id] = settings
        return chats

    async def save(self, settings: ChatSettings, everything: dict[int, ChatSettings]) -> None:
        await self._redis.hset(self.key, str(settings.chat_id), msgspec.json.encode(settings))

    async def close(self) -> None:
        await self._redis.aclose()


class Subscriptions:
    """The registry of chats; every change is written through to the store.

    A change reaches ``chats`` only once the store took it: a failed write raises
    ``SubscriptionStoreError`` and leaves memory as it was, so what pushes follow is always
    what a restarted bot will load.
    """

    def __init__(self, store: SubscriptionStore, *, max_symbols: int = 50) -> None:
        self.store = store
        self.max_symbols = max_symbols
        self.chats: dict[int, ChatSettings] = {}
        self._lock = anyio.Lock()

    async def load(self) -> list[str]:
        """Load every chat from the store; return what could not be read, in words."""
        self.chats = await self.store.load()
        return list(self.store.problems)

    def get(self, chat_id: int, user_id: int = 0) -> ChatSettings:
        """Return the settings of ``chat_id`` (defaults when the chat is new; not saved)."""
        found = self.chats.get(chat_id)
        return found if found is not None else ChatSettings(chat_id=chat_id, user_id=user_id)

    async def _change(
        self,
        chat_id: int,
        user_id: int,
        change: Callable[[ChatSettings], ChatSettings | None],
    ) -> bool:
        """Apply ``change`` (None: nothing to do) to the chat, store first; return if it did."""
        # One lock around read, write and apply: no change overtakes or overwrites another.
        async with self._lock:
            updated = change(self.get(chat_id, user_id))
            if updated is None:
                return False
            after = {**self.chats, chat_id: updated}
            # (Cancelled mid-write, the store may hold a change memory lacks: the next load
            # heals that; the reverse, memory ahead of the store, cannot happen.)
            try:
                await self.store.save(updated, after)
            except Exception as exc:
                raise SubscriptionStoreError(
                    f"{type(self.store).__name__} refused the change: {exc!r}"
                ) from exc
            self.chats = after
            return True

    async def subscribe(
        self, chat_id: int, user_id: int, symbol: str, *, thread_id: int | None = None
    ) -> bool:
        """Follow ``symbol`` (pushes go to forum topic ``thread_id``); False if already followed.

        Raise ``SubscriptionLimitError`` when the chat follows ``max_symbols`` already.
        """

        def add(settings: ChatSettings) -> ChatSettings | None:
            if symbol in settings.symbols:
                return None
            if len(settings.symbols) >= self.max_symbols:
                raise SubscriptionLimitError(self.max_symbols)
            symbols = [*settings.symbols, symbol]
            return msgspec.structs.replace(settings, symbols=symbols, thread_id=thread_id)

        return await self._change(chat_id, user_id, add)

    async def unsubscribe(self, chat_id: int, symbol: str) -> bool:
        """Stop following ``symbol`` (``*`` stops everything); return False if not followed."""

        def remove(settings: ChatSettings) -> ChatSettings | None:
            if symbol == ALL_SYMBOLS and settings.symbols:
                return msgspec.structs.replace(settings, symbols=[])
            if symbol in settings.symbols:
                remaining = [s for s in settings.symbols if s != symbol]
                return msgspec.structs.replace(settings, symbols=remaining)
            return None

        return await self._change(chat_id, 0, remove)

    async def set_notify(self, chat_id: int, user_id: int, kind: NotifyKind, on: bool) -> None:
        """Switch pushes of ``kind`` on or off for ``chat_id``."""

        def switch(settings: ChatSettings) -> ChatSettings:
            kinds = set(settings.notify) - {kind.value}
            if on:
                kinds.add(kind.value)
            return msgspec.structs.replace(settings, notify=sorted(kinds))

        await self._change(chat_id, user_id, switch)

    def recipients(self, kind: NotifyKind, symbol: str | None = None) -> list[int]:
        """Return the chats that should receive a push of ``kind`` about ``symbol``."""
        return [c for c, s in self.chats.items() if s.wants(kind, symbol)]

    async def close(self) -> None:
        """Close the store."""
        await self.store.close()

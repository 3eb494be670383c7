"""``TelegramActor``: the Telegram bot as a sidecar actor.

``handle`` folds bus messages into the read model and queues pushes for subscribed chats (never
waiting on Telegram); ``run`` long-polls the Bot API, feeds updates to the aiogram dispatcher
(one it cannot parse is skipped and counted, never retried forever: see ``updates``) and
drains the push outbox under Telegram's rate limits. Commands that change state (kill
switch, trading state) are published on the bus for the risk engine; the bot changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter, TelegramUnauthorizedError
from aiogram.methods import SendMessage
from aiogram.types import Update, User
from msgspec import Meta

from levibot.backoff import Backoff
from levibot.config import Config
from levibot.messages import (
    ActivateModel,
    Alert,
    Fill,
    Message,
    OrderClosed,
    OrderDenied,
    PortfolioSnapshot,
    RiskStatus,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Signal,
    SignalSide,
)
from levibot.runtime.actor import ActorContext, Policy, SourceActor, Supervision
from levibot.settings import with_storage
from sidecars.telegram import views
from sidecars.telegram.bot import COMMANDS, SHARED_SENDER_IDS, BotDeps, build_router
from sidecars.telegram.notify import Outbox, Outgoing, RetryAfterMiddleware, Sender
from sidecars.telegram.readmodel import ReadModel
from sidecars.telegram.subscriptions import (
    JsonFileStore,
    NotifyKind,
    RedisStore,
    Subscriptions,
    SubscriptionStore,
)
from sidecars.telegram.text import split_text
from sidecars.telegram.updates import (
    Dropped,
    DropReason,
    RawGetUpdates,
    parse_updates,
    poll_error,
    retry_after_delay,
)

TOKEN_ENV = "LEVIBOT__TELEGRAM__TOKEN"

PositiveFloat = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(ge=1)]


class TelegramConfig(Config, frozen=True, kw_only=True):
    """The ``[telegram]`` section. The token is secret: set ``LEVIBOT__TELEGRAM__TOKEN``."""

    token: str = ""
    api_base: str = "https://api.telegram.org"  # a local Bot API server or a test stand-in
    miniapp_url: str = ""  # the public https URL of the gateway's /app page
    # Telegram user ids allowed /killswitch and /trading. Telegram's shared ids (the
    # GroupAnonymousBot every anonymous group admin posts as, ...) are refused: see __post_init__.
    admin_user_ids: tuple[int, ...] = ()
    symbols: tuple[str, ...] = ()  # symbols users may subscribe to; empty: any well-formed one
    redis_url: str = ""  # persist subscriptions in Redis when set, else a JSON file
    redis_prefix: str = "levibot:telegram:"
    data_dir: str = ""  # "": [storage] data_dir; the file is <data_dir>/telegram/subscriptions.json
    per_chat_interval_s: Annotated[float, Meta(ge=0)] = 1.0
    global_rate_per_s: PositiveFloat = 25.0
    chat_queue_size: PositiveInt = 50
    max_attempts: PositiveInt = 5
    polling_timeout_s: Annotated[int, Meta(ge=0)] = 10
    request_timeout_s: PositiveFloat = 30.0
    push_signal_changes_only: bool = True  # push a signal only when its side changes
    min_push_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.0
    recent_size: PositiveInt = 50
    max_concurrent_updates: PositiveInt = 16
    max_symbols_per_chat: PositiveInt = 50  # /subscribe refuses more, with an answer saying so
    # A text longer than one message (4,096 UTF-16 units) is split into at most this many
    # messages; the rest is cut with a marker saying how much was left out.
    max_message_parts: PositiveInt = 4
    # The model registry /activate and /rollback move: PostgreSQL when a DSN is set here or in
    # [storage] (the one every process shares), else the folder models_root.
    postgres_schema: str = ""  # "": [storage]'s: the model registry's schema
    postgres_dsn: str = ""
    models_root: str = ""  # "": <[storage] data_dir>/models

    def __post_init__(self) -> None:
        # A shared id names no one: admitting it would make every anonymous admin of every
        # group (or every linked channel) an admin of this engine. Fail at start instead.
        shared = sorted(set(self.admin_user_ids) & set(SHARED_SENDER_IDS))
        if shared:
            names = ", ".join(f"{i} ({SHARED_SENDER_IDS[i]})" for i in shared)
            raise ValueError(
                f"telegram.admin_user_ids: {names}: Telegram's shared sender id names no "
                "person; anonymous admins must turn off 'Remain anonymous' and list their own id"
            )

    def __repr__(self) -> str:
        # The token must never reach a log line, a traceback or a config dump.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f != "token"}
        return f"TelegramConfig(token={'***' if self.token else ''!r}, {shown})"


class _Unauthorized(Exception):
    """The Bot API refused the token while polling."""


class TelegramActor(SourceActor[TelegramConfig]):
    """The Telegram bot: commands, pushes to subscribed chats, admin commands onto the bus."""

    name = "telegram"
    consumes = (
        Signal,
        Alert,
        Fill,
        OrderDenied,
        PortfolioSnapshot,
        OrderClosed,
        # The risk engine's status, and the commands too (whoever sent them) for /risk.
        RiskStatus,
        SetKillSwitch,
        SetTradingState,
        SetRiskPolicy,
    )
    emits = (SetKillSwitch, SetTradingState, ActivateModel)
    config_type = TelegramConfig
    supervision = Supervision(policy=Policy.RESTART, budget=10, window_s=300.0, backoff_s=1.0)

    def __init__(self, ctx: ActorContext, config: TelegramConfig) -> None:
        super().__init__(ctx, config)
        self._token = config.token or os.environ.get(TOKEN_ENV, "")
        self.readmodel = ReadModel(recent=config.recent_size)
        self.config = with_storage(self.config, ctx.storage, data_dir="", models_root="models")
        self._models: Any = None  # the model registry, opened by the first /activate or /rollback
        self._models_opening = anyio.Lock()  # two admins at once open it once
        self.subscriptions = Subscriptions(self._store(), max_symbols=config.max_symbols_per_chat)
        self.outbox = Outbox(
            per_chat_size=config.chat_queue_size,
            per_chat_interval_s=config.per_chat_interval_s,
            global_rate_per_s=config.global_rate_per_s,
        )
        self.sender: Sender | None = None
        self.ready = anyio.Event()  # set once polling runs (tests and readiness)
        self._last_side: dict[tuple[str, str], SignalSide] = {}
        self._started_ns = 0
        self.unauthorized = False  # the Bot API refused the token: the bot went quiet
        self._m_connect_failed = ctx.metrics.counter(
            "telegram_connect_failures_total", "Failed attempts to reach the Bot API at start"
        )
        self._m_dropped = ctx.metrics.counter(
            "telegram_push_dropped_total", "Pushes dropped because a chat's outbox was full"
        )
        self._m_poll_failed = ctx.metrics.counter(
            "telegram_poll_failures_total", "getUpdates calls that failed or were unreadable"
        )
        self._m_updates_dropped = {
            reason: ctx.metrics.counter(
                "telegram_updates_dropped_total",
                "Updates skipped because they could not be parsed",
                reason=reason.value,
            )
            for reason in DropReason
        }
        ctx.metrics.gauge(
            "telegram_outbox_pending", "Pushes waiting to be sent", fn=lambda: len(self.outbox)
        )

    def _store(self) -> SubscriptionStore:
        if self.config.redis_url:
            return RedisStore(self.config.redis_url, self.config.redis_prefix)
        return JsonFileStore(Path(self.config.data_dir) / "telegram" / "subscriptions.json")

    @property
    def enabled(self) -> bool:
        """Return True when a token is configured (else the bot stays silent)."""
        return bool(self._token)

    async def on_start(self) -> None:
        for problem in await self.subscriptions.load():
            self.ctx.log.error("telegram.subscriptions_unreadable", problem=problem)
        self._started_ns = self.ctx.clock.now_ns()
        self.ctx.log.info("telegram.loaded", chats=len(self.subscriptions.chats))

    async def on_stop(self) -> None:
        await self.subscriptions.close()
        models, self._models = self._models, None
        if models is not None:
            await models.close()

    async def model_registry(self) -> Any:
        """Open (once) the model registry every process shares, for /activate and /rollback."""
        async with self._models_opening:
            if self._models is None:
                from levibot.ml.registries import open_registry

                cfg = self.config
                self._models = await open_registry(
                    cfg.models_root, dsn=cfg.postgres_dsn, schema=cfg.postgres_schema
                )
        return self._models

    async def handle(self, msg: Message) -> None:
        self.readmodel.apply(msg)
        if not self.enabled:
            return
        for chat_id, text in self.pushes(msg):
            thread_id = self.subscriptions.get(chat_id).thread_id
            for part in split_text(text, max_parts=self.config.max_message_parts):
                if not self.outbox.put(chat_id, part, thread_id):
                    self._m_dropped.inc()

    def pushes(self, msg: Message) -> list[tuple[int, str]]:
        """Return the (chat, text) pushes ``msg`` causes; remembers what signals it pushed."""
        symbol: str | None
        match msg:
            case Signal():
                if msg.confidence < self.config.min_push_confidence:
                    return []
                key = (msg.strategy, msg.symbol)
                if self.config.push_signal_changes_only and self._last_side.get(key) is msg.side:
                    return []
                self._last_side[key] = msg.side
                kind, symbol, text = NotifyKind.SIGNALS, msg.symbol, views.signal_line(msg)
            case Alert():
                kind, symbol, text = NotifyKind.ALERTS, None, views.alert_line(msg)
            case Fill() | OrderClosed():
                kind, symbol, text = NotifyKind.FILLS, msg.symbol, views.order_line(msg)
            case OrderDenied():
                kind, symbol, text = NotifyKind.DENIALS, msg.symbol, views.order_line(msg)
            case _:
                return []
        return [(chat, text) for chat in self.subscriptions.recipients(kind, symbol)]

    def status_text(self) -> str:
        """Return the ``/status`` answer."""
        rm = self.readmodel
        uptime_s = max(0, self.ctx.clock.now_ns() - self._started_ns) // 1_000_000_000
        equity = views.money(rm.portfolio.equity) if rm.portfolio else "no snapshot yet"
        ks = rm.risk.kill_switch
        sender = self.sender
        followed = sum(1 for s in self.subscriptions.chats.values() if s.symbols)
        return "\n".join(
            [
                f"levibot bot up {uptime_s // 3600}h{uptime_s % 3600 // 60:02d}m",
                f"Equity: {equity}",
                f"Kill switch: {'unknown' if ks is None else ('ON' if ks else 'off')}",
                f"Signals seen: {rm.seen['Signal']} · orders seen: "
                f"{rm.seen['Fill'] + rm.seen['OrderDenied'] + rm.seen['OrderClosed']}",
                f"Chats subscribed: {followed}",
                f"Pushes sent: {sender.sent if sender else 0} · pending: {len(self.outbox)}"
                f" · dropped: {sum(self.outbox.dropped.values())}",
            ]
        )

    async def run(self) -> None:
        if not self.enabled:
            self.ctx.log.warning("telegram.disabled", reason=f"{TOKEN_ENV} is not set")
            await anyio.sleep_forever()
        session = AiohttpSession(
            api=TelegramAPIServer.from_base(self.config.api_base),
            timeout=self.config.request_timeout_s,
        )
        session.middleware(RetryAfterMiddleware(max_retries=self.config.max_attempts))
        bot = Bot(self._token, session=session)
        try:
            await self._serve(bot)
        finally:
            with anyio.CancelScope(shield=True):
                await session.close()
            self.ready = anyio.Event()

    async def _serve(self, bot: Bot) -> None:
        deps = BotDeps(
            readmodel=self.readmodel,
            subscriptions=self.subscriptions,
            publish=self.ctx.publish,
            now_ns=self.ctx.clock.now_ns,
            status=self.status_text,
            log=self.ctx.log,
            admin_user_ids=frozenset(self.config.admin_user_ids),
            miniapp_url=self.config.miniapp_url,
            allowed_symbols=frozenset(s.upper() for s in self.config.symbols),
            max_message_parts=self.config.max_message_parts,
            registry=self.model_registry,
        )
        dp = Dispatcher()
        dp["deps"] = deps  # injected into every handler that declares ``deps: BotDeps``
        dp.include_router(build_router())
        me = await self._connect(bot)
        if me is None:
            await self._dormant()
        self.ctx.log.info("telegram.started", username=me.username, api=self.config.api_base)

        async def send(item: Outgoing) -> Any:
            # Straight to the session: 429s are the sender's to schedule, not a middleware's.
            method = SendMessage(
                chat_id=item.chat_id, text=item.text, message_thread_id=item.thread_id
            )
            return await bot.session.make_request(bot, method, timeout=None)

        self.sender = Sender(
            self.outbox,
            send,
            metrics=self.ctx.metrics,
            log=self.ctx.log,
            max_attempts=self.config.max_attempts,
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.sender.run)
                tg.start_soon(self._poll, bot, dp)
                self.ready.set()
        except* _Unauthorized:
            await self._dormant()

    async def _connect(self, bot: Bot) -> User | None:
        # Telegram being unreachable is Telegram's problem: retry forever, never fail the node.
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                me = await bot.get_me()
                await bot.delete_webhook()
                await bot.set_my_commands(list(COMMANDS))
                return me
            except TelegramUnauthorizedError:
                return None
            except Exception as exc:
                self._m_connect_failed.inc()
                error = repr(exc).replace(self._token, "***")
                wait = backoff.next()
                self.ctx.log.warning("telegram.connect_failed", error=error, retry_s=wait)
                await anyio.sleep(wait)

    async def _dormant(self) -> NoReturn:
        # A refused token needs an operator, not restarts that would end the whole node.
        self.unauthorized = True
        self.ctx.log.error(
            "telegram.unauthorized", hint=f"the Bot API refused the token; check {TOKEN_ENV}"
        )
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def _poll(self, bot: Bot, dp: Dispatcher) -> None:
        # Raw JSON values, validated one by one: one update aiogram cannot parse must not fail
        # the batch, or the offset never passes it and the bot answers nothing ever again.
        method = RawGetUpdates(
            timeout=self.config.polling_timeout_s,
            allowed_updates=dp.resolve_used_update_types(),
        )
        limiter = anyio.CapacityLimiter(self.config.max_concurrent_updates)
        chat_locks: dict[int, anyio.Lock] = {}
        backoff = Backoff(initial=0.5, maximum=30.0)
        async with anyio.create_task_group() as tg:
            while True:
                values = await self._fetch(bot, method, backoff)
                if values is None:
                    continue
                batch = parse_updates(bot, values)
                for dropped in batch.dropped:
                    self._drop(dropped)
                if batch.next_offset is not None:
                    # The batch's own highest id, as aiogram does, not a running maximum:
                    # after a week without updates Telegram may start again at a lower id.
                    method.offset = batch.next_offset
                if batch.next_offset is None and batch.dropped:
                    # Only values without an id: no offset can confirm them, so they come back.
                    await anyio.sleep(backoff.next())
                else:
                    backoff.reset()
                for update in batch.updates:
                    tg.start_soon(self._feed, bot, dp, update, limiter, chat_locks)

    async def _fetch(self, bot: Bot, method: RawGetUpdates, backoff: Backoff) -> list[Any] | None:
        """Return one getUpdates answer, or None after waiting out a failure."""
        timeout = int(self.config.request_timeout_s + self.config.polling_timeout_s)
        try:
            # Straight to the session: the reply middleware would sleep out any retry_after.
            values: Any = await bot.session.make_request(bot, method, timeout=timeout)
            if not isinstance(values, list):  # {"ok": true} without a result
                raise TypeError(f"getUpdates answered {type(values).__name__}, not a list")
            return values
        except TelegramUnauthorizedError:
            raise _Unauthorized from None
        except TelegramRetryAfter as exc:
            delay = retry_after_delay(exc.retry_after)
            self.ctx.log.warning(
                "telegram.poll_throttled", retry_after=exc.retry_after, retry_s=delay
            )
        except Exception as exc:  # unreachable, or an answer that is not the Bot API's
            self._m_poll_failed.inc()
            delay = backoff.next()
            # An HTTP error may quote the request URL, which carries the token.
            error = poll_error(exc).replace(self._token, "***")
            self.ctx.log.warning("telegram.poll_failed", error=error, retry_s=round(delay, 3))
        await anyio.sleep(delay)
        return None

    def _drop(self, dropped: Dropped) -> None:
        self._m_updates_dropped[dropped.reason].inc()
        self.ctx.log.warning(
            "telegram.update_dropped",
            update_id=dropped.update_id,
            reason=dropped.reason.value,
            error=dropped.error,
            prefix=dropped.prefix,
        )

    async def _feed(
        self,
        bot: Bot,
        dp: Dispatcher,
        update: Update,
        limiter: anyio.CapacityLimiter,
        chat_locks: dict[int, anyio.Lock],
    ) -> None:
        # Updates of one chat are handled in order (a FIFO lock per chat); chats run in parallel.
        chat = update.message.chat.id if update.message is not None else 0
        lock = chat_locks.setdefault(chat, anyio.Lock())
        try:
            async with lock, limiter:
                await dp.feed_update(bot, update)
        except Exception as exc:
            self.ctx.log.error(
                "telegram.update_failed", update_id=update.update_id, error=repr(exc)
            )
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                chat_locks.pop(chat, None)

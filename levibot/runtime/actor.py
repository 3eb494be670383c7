"""The actor model: ``Actor`` (an inbox and three hooks), ``SourceActor`` and ``ActorContext``.

An actor never creates tasks and never imports a transport: it sees only its ``ActorContext``
(publish, clock, its config, metrics, a bound logger, its partition). The runtime owns the
receive loop, supervision and the lifecycle.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from levibot.clock import Clock
from levibot.config import Config
from levibot.messages import Message
from levibot.metrics import Metrics
from levibot.partition import Partition

ConfigT = TypeVar("ConfigT", bound=Config)


class Policy(enum.Enum):
    """What the runtime does when ``handle`` (or a source's ``run``) raises."""

    SKIP = "skip"  # log and count the poison message, go on with the next one
    RESTART = "restart"  # on_stop, back off, on_start again (the failed message is not retried)
    CRASH = "crash"  # stop the node non-zero: the state can no longer be trusted


class Supervision(msgspec.Struct, frozen=True, kw_only=True):
    """An actor's supervision policy. ``budget`` restarts per ``window_s`` before giving up."""

    policy: Policy = Policy.SKIP
    budget: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.05
    max_backoff_s: float = 5.0


class EmptyConfig(Config, frozen=True, kw_only=True):
    """The config of an actor that has none."""


async def _settled() -> None:
    """Nothing to wait for (a context outside a node)."""


class ActorContext:
    """Everything an actor may touch of the world outside itself."""

    def __init__(
        self,
        *,
        name: str,
        publish: Callable[[Message], Awaitable[None]],
        clock: Clock,
        metrics: Metrics,
        log: Any,
        partition: Partition = Partition(),
        node: str = "local",
        settle: Callable[[], Awaitable[None]] | None = None,
        storage: Any = None,
        config: Any = None,
    ) -> None:
        self.name = name
        self.config = config  # the actor's own section (also ``Actor.config``)
        self.publish = publish
        #: Wait until everything published so far has been handled, downstream included. A
        #: replay source awaits it after each event so that the pipeline processes events one at
        #: a time, as they happened: the bit-for-bit determinism of replay and backtest rests on
        #: it. Outside a node (unit tests) it returns at once. The node's own callable, not a
        #: method around it: one coroutine less per event of every replay.
        self.settle: Callable[[], Awaitable[None]] = settle if settle is not None else _settled
        self.storage = storage  # the shared [storage] section: data_dir, postgres_dsn, redis_url
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.partition = partition
        self.node = node

    def owns(self, symbol: str) -> bool:
        """Return True when this actor's replica owns ``symbol``."""
        return self.partition.owns(symbol)


class Actor(Generic[ConfigT]):
    """An inbox and three hooks. Subclasses declare what they consume and emit.

    ``handle`` is called once per message, in order. An actor that benefits from seeing what is
    pending at once (micro-batching) sets ``max_batch`` above 1 and overrides ``handle_batch``.
    ``tick_interval_s`` asks the runtime to call ``on_tick`` periodically (live clock only).
    """

    name: ClassVar[str] = ""
    consumes: ClassVar[tuple[type[Message], ...]] = ()
    emits: ClassVar[tuple[type[Message], ...]] = ()
    config_type: ClassVar[type[Config]] = EmptyConfig
    supervision: ClassVar[Supervision] = Supervision()
    partitioned: ClassVar[bool] = False  # per-symbol state: replicas split the symbols
    mailbox_size: ClassVar[int] = 4096
    lossless: ClassVar[bool] = False  # True: every type blocks in this inbox, nothing conflates
    max_batch: ClassVar[int] = 1
    tick_interval_s: ClassVar[float] = 0.0

    def __init__(self, ctx: ActorContext, config: ConfigT) -> None:
        self.ctx = ctx
        self.config = config

    async def on_start(self) -> None:
        """Acquire what the actor needs; it is ready to handle messages once this returns."""

    async def handle(self, msg: Any) -> None:
        """Handle one message."""

    async def handle_batch(self, msgs: Sequence[Any]) -> None:
        """Handle every pending message at once; by default one ``handle`` each."""
        for msg in msgs:
            await self.handle(msg)

    async def on_tick(self) -> None:
        """Do periodic work (snapshots, flushes); called every ``tick_interval_s``."""

    async def on_stop(self) -> None:
        """Release resources; called once after the inbox has drained."""

    def warm(self) -> None:
        """Run the hot path's code on data it already has, so that it stays in the CPU caches.

        With ``[node] idle = "spin"`` the node calls it while its loop is idle (after
        ``levibot.runtime.node.WARM_EVERY_S`` of idleness, one actor per loop pass, never while
        a message waits): after a quiet spell the first message otherwise runs several times
        slower. It must change nothing: no publish, no state, no metric; its results are thrown
        away. Sync and short (tens of µs): a message arriving meanwhile waits for it.
        """

    def health(self) -> dict[str, Any]:
        """Return what ``/health`` should say about this actor (e.g. the ONNX provider)."""
        return {}


class SourceActor(Actor[ConfigT]):
    """An actor with no inbox that produces messages from the world in ``run``."""

    async def run(self) -> None:
        """Publish messages until the source is exhausted or the task is cancelled."""
        raise NotImplementedError

"""Pipeline actors defined by the tests, to prove the runtime before the real actors exist.

``counter`` emits ``Num(i)`` for i in range(count); ``square`` turns each into ``Squared``;
``sink`` appends every ``Squared`` it handles to a file, one line each. ``Num`` rides core NATS
(market-rate); ``Job``/``Done`` ride JetStream (durable). Loaded by nodes through
``[node] plugins = ["tests.pipeline"]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from levibot.config import Config
from levibot.messages import Message, Overflow
from levibot.registry import register
from levibot.runtime import Actor, Policy, SourceActor, Supervision
from levibot.settings import Settings, load_settings


class Num(Message, frozen=True, kw_only=True):
    """A number, market-rate."""

    symbol: str
    value: int
    overflow: ClassVar[Overflow] = Overflow.BLOCK
    subject_root: ClassVar[str] = "lbtest.num"

    def subject(self) -> str:
        return f"lbtest.num.{self.symbol}"


class Squared(Message, frozen=True, kw_only=True):
    """A number squared, durable."""

    symbol: str
    value: int
    square: int
    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lbtest.sq"

    def subject(self) -> str:
        return f"lbtest.sq.{self.symbol}"

    def dedup_id(self) -> str:
        return f"sq:{self.symbol}:{self.value}"


class Job(Message, frozen=True, kw_only=True):
    """A unit of durable work."""

    job: int
    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lbtest.job"

    def subject(self) -> str:
        return "lbtest.job.all"

    def dedup_id(self) -> str:
        return f"job:{self.job}"


class CounterConfig(Config, frozen=True, kw_only=True):
    count: int = 100
    symbols: tuple[str, ...] = ("AAA", "BBB", "CCC")
    jobs: bool = False  # emit Job instead of Num
    pace_every: int = 0  # yield to the loop (sleep 1 ms) every N messages; 0: never


class CounterSource(SourceActor[CounterConfig]):
    name = "counter"
    emits = (Num, Job)
    config_type = CounterConfig

    async def run(self) -> None:
        import anyio

        for i in range(self.config.count):
            now = self.ctx.clock.now_ns()
            if self.config.jobs:
                await self.ctx.publish(Job(ts_event=i, ts_init=now, ts_ingress=now, job=i))
            else:
                symbol = self.config.symbols[i % len(self.config.symbols)]
                msg = Num(ts_event=i, ts_init=now, ts_ingress=now, symbol=symbol, value=i)
                await self.ctx.publish(msg)
            if self.config.pace_every and i % self.config.pace_every == 0:
                await anyio.sleep(0.001)


class SquareConfig(Config, frozen=True, kw_only=True):
    fail_on: tuple[int, ...] = ()  # values whose handling raises


class Square(Actor[SquareConfig]):
    name = "square"
    consumes = (Num, Job)
    emits = (Squared,)
    config_type = SquareConfig
    partitioned = True

    async def handle(self, msg: Num | Job) -> None:
        value = msg.value if isinstance(msg, Num) else msg.job
        symbol = msg.symbol if isinstance(msg, Num) else "JOB"
        if value in self.config.fail_on:
            raise ValueError(f"poison {value}")
        await self.ctx.publish(
            Squared(
                ts_event=msg.ts_event,
                ts_init=self.ctx.clock.now_ns(),
                ts_ingress=msg.ts_ingress,
                symbol=symbol,
                value=value,
                square=value * value,
            )
        )


class SinkConfig(Config, frozen=True, kw_only=True):
    path: str = ""
    fail_on: tuple[int, ...] = ()
    delay_s: float = 0.0  # a slow consumer


class Sink(Actor[SinkConfig]):
    """Appends ``symbol value square`` lines to ``path`` (flushed per line)."""

    name = "sink"
    consumes = (Squared,)
    config_type = SinkConfig

    async def on_start(self) -> None:
        self.seen: list[Squared] = []
        path = self.config.path
        self._fh = open(path, "a", buffering=1) if path else None  # noqa: SIM115, ASYNC230 (tiny test file)

    async def handle(self, msg: Squared) -> None:
        if msg.value in self.config.fail_on:
            raise RuntimeError(f"sink refuses {msg.value}")
        if self.config.delay_s:
            import anyio

            await anyio.sleep(self.config.delay_s)
        self.seen.append(msg)
        if self._fh is not None:
            self._fh.write(f"{msg.symbol} {msg.value} {msg.square}\n")

    async def on_stop(self) -> None:
        if self._fh is not None:
            self._fh.close()


class CrashySink(Sink):
    name = "crashy_sink"
    supervision = Supervision(policy=Policy.RESTART, budget=2, window_s=60, backoff_s=0.001)


class FatalSink(Sink):
    name = "fatal_sink"
    supervision = Supervision(policy=Policy.CRASH)


for _cls in (CounterSource, Square, Sink, CrashySink, FatalSink):
    register(_cls.name, f"{__name__}:{_cls.__name__}")

GROUPS = {"source": ("counter",), "work": ("square",), "out": ("sink",)}


def chain_settings(count: int, **node: Any) -> Settings:
    """Return the settings of one node running counter → square → sink over ``count`` numbers,
    in group ``all``, with no HTTP; ``node``: more ``[node]`` settings (``idle="spin"``)."""
    return load_settings(
        None,
        environ={},
        overrides={
            "groups": {"all": ("counter", "square", "sink"), **GROUPS},
            "node": {"groups": ["all"], "http_port": -1, **node},
            "counter": {"count": count},
        },
    )


class OrderLogConfig(Config, frozen=True, kw_only=True):
    path: str = ""


class OrderLog(Actor[OrderLogConfig]):
    """Appends every order decision and fill, msgpack-encoded, one hex line each."""

    name = "order_log"
    config_type = OrderLogConfig

    async def on_start(self) -> None:
        import msgspec

        self._encode = msgspec.msgpack.Encoder().encode
        self._fh = open(self.config.path, "a", buffering=1)  # noqa: SIM115, ASYNC230 (tiny test file)

    async def handle(self, msg: Message) -> None:
        self._fh.write(self._encode(msg).hex() + "\n")

    async def on_stop(self) -> None:
        self._fh.close()


def _order_types() -> tuple[type[Message], ...]:
    from levibot.messages import Fill, OrderDenied, OrderIntent

    return (OrderIntent, OrderDenied, Fill)


OrderLog.consumes = _order_types()
register(OrderLog.name, f"{__name__}:OrderLog")


class Ticker(Actor[Config]):
    """Counts its periodic ticks."""

    name = "ticker"
    consumes = (Squared,)
    tick_interval_s = 0.005

    async def on_start(self) -> None:
        self.ticks = 0

    async def on_tick(self) -> None:
        self.ticks += 1


class Ticker2(Ticker):
    name = "ticker2"


register("ticker", f"{__name__}:Ticker")
register("ticker2", f"{__name__}:Ticker2")

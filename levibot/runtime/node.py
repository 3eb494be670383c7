"""A node: one OS process running some actor groups, with an orderly start and drain.

Start: HTTP endpoint → NATS (if configured) → every actor's ``on_start`` (the readiness barrier)
→ receive loops → NATS ingress → sources. ``/ready`` turns true only then.

Stop (first SIGTERM/SIGINT, a crash, or sources done when so configured): sources are
cancelled, NATS ingress stops, the node waits until every mailbox is empty and every actor
idle (the drain cascades downstream), closes the mailboxes upstream-first calling ``on_stop``,
publishes what is left in the NATS egress queue, and drains NATS last. A second signal cancels
everything at once.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from levibot.bus import LocalBus, Mailbox, NatsMirror
from levibot.bus._mailbox import TapMailbox
from levibot.bus._own import handled as own_handled
from levibot.clock import Clock, LiveClock, ReplayClock
from levibot.errors import (
    EXIT_CANCELLED,
    EXIT_SOFTWARE,
    LevibotError,
    ListenError,
    UnavailableError,
)
from levibot.logging import get_logger
from levibot.messages import CORE_TYPES, Codec, Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.registry import resolve
from levibot.runtime._replay import ReplayScheduler
from levibot.runtime._runner import ActorRunner
from levibot.runtime.actor import Actor, ActorContext
from levibot.runtime.failure import address, explain, format_traceback, probe, reason
from levibot.runtime.http import NodeHttp
from levibot.runtime.loop_lag import LoopLag
from levibot.settings import Settings
from levibot.tracing import configure as configure_tracing

EXIT_OK = 0
EXIT_CRASH = EXIT_SOFTWARE  # an actor crashed or exhausted its restart budget
#: ``[node] idle = "spin"``: the loop idle this long, the actors' ``warm`` hooks run again.
WARM_EVERY_S = 0.0005


def _busy(runners: list[ActorRunner]) -> bool:
    """True while a local mailbox holds a message or an actor is handling one; what a finished
    (crashed) actor left in its mailbox does not count. A spinning node pays this on every loop
    pass and NATS egress on every turn it waits: plain loops, about 0.4 µs for 8 actors
    (``all()`` over a generator took 4)."""
    for runner in runners:
        box: Any = runner.mailbox  # every runner here has one
        if runner.busy or (box.size and not runner.finished.is_set()):
            return True
    return False


def core_out(
    settings: Settings, groups: tuple[str, ...], types: Iterable[type[Message]]
) -> dict[type[Message], bool]:
    """Return, for each of ``types``, whether a node running ``groups`` sends it to NATS.

    A type goes out when an actor elsewhere consumes it, as the local bus routes (a subclass of
    one of its ``consumes``). Every pod runs the same ``[groups]`` with its own ``[node]
    groups``, so the actors of the groups it does not run are elsewhere, and with
    ``partition_count`` > 1 so are the other replicas of its partitioned actors. Actors are
    imported only until every type is decided (the telegram actor's aiogram costs 2 s and
    130 MiB). ``[nats] mirror = "all"``: every type.
    """
    out = dict.fromkeys(types, settings.nats.mirror == "all")
    if settings.nats.mirror == "all":
        return out
    names: list[str] = []
    if settings.node.partition_count > 1:
        names += [n for n in settings.actors_of(groups) if resolve(n).partitioned]
    names += settings.actors_of(tuple(g for g in settings.groups if g not in groups))
    for name in names:
        left = [t for t, sent in out.items() if not sent]
        if not left:
            break
        consumes = resolve(name).consumes
        out.update((t, True) for t in left if issubclass(t, consumes))
    return out


def drain_order(actors: list[Actor[Any]]) -> list[Actor[Any]]:
    """Return ``actors`` upstream first (sources, then by the consumes/emits graph).

    Cycles (risk ⇄ order) are broken in the declared order.
    """
    remaining = list(actors)
    ordered: list[Actor[Any]] = []
    while remaining:
        for actor in remaining:
            upstream = [
                other
                for other in remaining
                if other is not actor
                and any(issubclass(t, actor.consumes) for t in other.emits if actor.consumes)
            ]
            if not upstream:
                break
        else:
            actor = remaining[0]  # a cycle: take the first declared
        remaining.remove(actor)
        ordered.append(actor)
    return ordered


class Node:
    """Builds the actors of some groups and runs them until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        groups: tuple[str, ...] | None = None,
        clock: Clock | None = None,
        direct_replay: bool | None = None,
    ) -> None:
        self.settings = settings
        node = settings.node
        self.groups = groups if groups is not None else node.groups
        self.node_id = f"{node.name}-{socket.gethostname()}-{os.getpid()}"
        self.clock: Clock = clock or (ReplayClock() if node.replay else LiveClock())
        self.metrics = Metrics()
        # None unless [tracing] enabled: then nothing below is wrapped and tracing costs nothing.
        self.tracer = configure_tracing(
            settings.tracing, service=node.name, node=self.node_id, groups=self.groups
        )
        self.log = get_logger(node=node.name)
        self.bus = LocalBus()
        self.partition = Partition(node.partition_index, node.partition_count)
        self.runners: list[ActorRunner] = []
        self.actors: dict[str, Actor[Any]] = {}
        self.mirror: NatsMirror | None = None
        self.http = NodeHttp(self.metrics, self.health, lambda: self.ready)
        self.ready = False
        self.metrics.gauge(
            "levibot_node_ready", "1 while /ready answers 200 (every actor started, not draining)",
            fn=lambda: float(self.ready),
        )  # fmt: skip
        self.exit_code = EXIT_OK
        self.failure: LevibotError | None = None  # why the start failed, in one line
        self._starting = "node"  # what the start is doing, named as in the configuration
        self._egress_started = False
        self._stop = anyio.Event()
        self._cancel_scope: anyio.CancelScope | None = None
        self._tick_scopes: list[anyio.CancelScope] = []
        self._egress_done = anyio.Event()
        self._source_scopes: list[tuple[ActorRunner, anyio.CancelScope]] = []
        self._sources_left = 0
        self._started_at = time.time()
        self.idle_passes = 0  # loop passes of the spinning idle task (``[node] idle = "spin"``)
        self._settle_waiters: list[anyio.Event] = []
        # A replay with no NATS mirror runs every handler from the settling task (see
        # levibot.runtime._replay); ``direct_replay=False`` keeps one receive loop per actor.
        if direct_replay is None:
            direct_replay = node.replay and not settings.nats.url
        elif direct_replay and settings.nats.url:
            # Messages from NATS arrive outside any settle, and the mirror holds the acks of
            # the node's own durable messages on the receive loops' counts (``_own``).
            raise ValueError("direct_replay runs without a NATS mirror: set no [nats] url")
        self.replay = ReplayScheduler() if direct_replay else None
        self._build()
        self._inbox_runners = [r for r in self.runners if r.mailbox is not None]
        for runner in self._inbox_runners:
            if self.replay is not None:
                if not isinstance(runner.mailbox, TapMailbox):
                    self.replay.attach(runner)
            else:
                runner.on_idle = self._maybe_settled

    # -- construction ---------------------------------------------------------------------

    def _build(self) -> None:
        names = self.settings.actors_of(self.groups)
        conflate = not self.settings.node.replay
        for name in names:
            cls = resolve(name)
            partition = self.partition if cls.partitioned else Partition()
            config = self.settings.actor_config(name)
            ctx = ActorContext(
                name=name,
                publish=self.bus.publish
                if self.tracer is None
                else self.tracer.publisher(name, self.bus.publish),
                clock=self.clock,
                metrics=self.metrics,
                log=self.log.bind(actor=name),
                partition=partition,
                node=self.node_id,
                settle=self.settle if self.replay is None else self.replay.settle,
                storage=self.settings.storage,
                config=config,
            )
            actor = cls(ctx, config)
            if self.tracer is not None:
                self.tracer.instrument(actor)
            mailbox: Mailbox | None = None
            if cls.consumes:
                if self.replay is not None and self.tracer is None and getattr(cls, "taps", False):
                    # It only records: handled as published (levibot.backtest.recorder).
                    mailbox = TapMailbox(name, actor.record)
                elif self.replay is not None:
                    mailbox = self.replay.mailbox(name, cls.mailbox_size)
                else:
                    mailbox = Mailbox(
                        name, cls.mailbox_size, conflate=conflate and not cls.lossless
                    )
                self.bus.subscribe(mailbox, cls.consumes, partition)
            self.actors[name] = actor
            self.runners.append(
                ActorRunner(
                    actor, mailbox, clock=self.clock, metrics=self.metrics,
                    log=ctx.log, on_fatal=self._on_fatal,
                )
            )  # fmt: skip
        if self.settings.nats.url:
            types = {*CORE_TYPES}
            for actor in self.actors.values():
                types.update(actor.consumes)
                types.update(actor.emits)
            consumer = f"{self.settings.nats.durable_prefix}_{'-'.join(sorted(self.groups))}"
            if self.partition.count > 1:
                consumer += f"_p{self.partition.index}of{self.partition.count}"
            # The core types this node's actors emit; one they publish undeclared goes out.
            emitted = [t for a in self.actors.values() for t in a.emits if not t.durable]
            self.mirror = NatsMirror(
                self.settings.nats,
                node=self.node_id,
                consumer_name=consumer,
                codec=Codec(sorted(types, key=lambda t: t.__name__)),
                metrics=self.metrics,
                log=self.log.bind(component="nats"),
                partition=self.partition,
                data_dir=self.settings.storage.data_dir,  # the spill of refused publishes
                tracer=self.tracer,
                local_busy=lambda: _busy(self._inbox_runners),
                backlog=self._backlog,
                core_out=core_out(self.settings, self.groups, emitted),
            )
            self.bus.egress = self.mirror.enqueue
            cfg = self.settings.nats
            out = {t for t, sent in self.mirror.core_out.items() if sent or cfg.durable_all}
            self.log.info(
                "nats.mirror", mode=cfg.mirror, durable_all=cfg.durable_all,
                core_sent=sorted(t.__name__ for t in out),
                core_kept=sorted(t.__name__ for t in self.mirror.core_out.keys() - out),
            )  # fmt: skip

    async def settle(self) -> None:
        """Wait until everything published so far is handled, across nodes when configured.

        In a replay with no NATS the actors' ``ctx.settle`` is the replay scheduler's: it runs
        the handlers itself, in the caller's task (``levibot.runtime._replay``).
        """
        await self._settle_local()
        nodes = self.settings.nats.settle_nodes
        if self.mirror is not None and nodes > 1:
            await self.mirror.settle_cluster(nodes, self._settle_local)

    def _idle(self) -> bool:
        """True when no local mailbox holds a message and no actor is handling one."""
        return not _busy(self._inbox_runners)

    async def _settle_local(self) -> None:
        """Wait until no local mailbox holds a message and no actor is handling one.

        Woken by the runners (``on_idle``: an actor done with its last message) rather than by
        polling every loop pass: a replay settles after every event, so this is its hot path.
        """
        if self.replay is not None:
            await self.replay.settle()
            return
        while not self._idle():
            settled = anyio.Event()
            self._settle_waiters.append(settled)
            await settled.wait()

    def _maybe_settled(self) -> None:
        if self._settle_waiters and self._idle():
            waiters, self._settle_waiters = self._settle_waiters, []
            for event in waiters:
                event.set()

    def _backlog(self) -> Callable[[], bool]:
        """Return a test that turns true once every message now in a local mailbox, or being
        handled, has been handled (the mirror holds the acks of its own durable messages on
        it: ``levibot.bus._own``)."""
        runners = self._inbox_runners
        if not _busy(runners):
            return own_handled  # the usual case: the local copy is handled already
        marks = [(r, r.backlog_mark()) for r in runners]
        return lambda: all(r.handled_up_to(mark) for r, mark in marks)

    def remote_types(self) -> set[type[Message]]:
        """Return the types to take from NATS.

        Those local actors consume and no local actor produces; and the durable types local
        actors consume even when produced here too: our own copies are skipped by origin, but a
        restarted process gets what its predecessor published and never handled (an order
        intent risk approved just before a kill -9, a command from another node).
        """
        consumed = {t for a in self.actors.values() for t in a.consumes}
        produced = {t for a in self.actors.values() for t in a.emits}
        return {t for t in consumed if t.durable or not any(issubclass(t, p) for p in produced)}

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful drain (idempotent)."""
        self._stop.set()

    def cancel(self) -> None:
        """Cancel everything at once."""
        self.exit_code = EXIT_CANCELLED
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _on_fatal(self, actor: str, exc: BaseException) -> None:
        self.exit_code = EXIT_CRASH
        self.log.error("node.fatal", failed_actor=actor, error=repr(exc))
        self.stop()

    def health(self) -> dict[str, Any]:
        """Return the node's health document."""
        return {
            "node": self.node_id,
            "groups": list(self.groups),
            "ready": self.ready,
            "uptime_s": round(time.time() - self._started_at, 3),
            "nats": bool(self.mirror),
            "actors": {r.name: {"started": r.started, **r.actor.health()} for r in self.runners},
        }

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until stopped; return the process exit code."""
        node = self.settings.node
        with anyio.CancelScope() as self._cancel_scope:
            async with anyio.create_task_group() as tg:
                if handle_signals:
                    tg.start_soon(self._watch_signals)
                tg.start_soon(LoopLag(self.metrics).run)  # stalls of the loop, as metrics
                try:
                    if node.http_port >= 0:
                        await self._listen(node.http_host, node.http_port)
                    await self._start(tg)
                except Exception as exc:
                    self._start_failed(exc)
                spin = anyio.CancelScope()
                frozen = False
                if self.exit_code == EXIT_OK and not self._stop.is_set():
                    frozen = node.gc_freeze and not node.replay
                    if frozen:  # what starting made lives as long as the node: out of sight
                        gc.collect()  # (garbage first: a frozen cycle is never collected)
                        gc.freeze()
                    self.ready = True
                    self.log.info("node.ready", groups=list(self.groups), actors=list(self.actors))
                    if node.idle == "spin" and not node.replay:
                        tg.start_soon(self._spin, spin)
                await self._stop.wait()
                spin.cancel()
                self.ready = False
                if frozen:
                    gc.unfreeze()  # collectable again once this node is gone (tests, sweeps)
                await self._drain(tg)
                tg.cancel_scope.cancel()  # the signal watcher, tick loops
        await self.http.stop()
        self.log.info("node.stopped", exit_code=self.exit_code)
        if self.tracer is not None:
            self.tracer.shutdown()  # export the spans still pending
        return self.exit_code

    async def _spin(self, scope: anyio.CancelScope) -> None:
        """Keep the event loop from ever blocking (``[node] idle = "spin"``) until cancelled.

        A task that is always ready makes every loop pass poll without waiting, so the work a
        message brings starts at once on a core that stayed hot, instead of after a wake-up of
        a descheduled vCPU with cold caches (2-10x slower on a shared VM). It costs a core.

        Spinning keeps the core, not the hot path's code and data in its caches (a 1-row ONNX
        run took 120-160 µs after 5 ms of spinning, 25-35 µs when re-run every 0.5-1 ms): so
        once no mailbox has held a message for ``WARM_EVERY_S``, the actors that have a
        ``warm`` hook are warmed, one per loop pass (a message arriving waits for one at most).
        """
        warmers = [r.actor for r in self._inbox_runners if type(r.actor).warm is not Actor.warm]
        runners = self._inbox_runners
        clock = time.perf_counter
        quiet_since, turn = clock(), 0
        with scope:
            while True:
                self.idle_passes += 1
                # asyncio's own zero sleep, as anyio's checkpoint is on asyncio, without the
                # backend lookup: 1.5 µs a pass instead of 2.4 (a message may wait for one).
                await asyncio.sleep(0)
                if not warmers:
                    continue
                if _busy(runners):
                    quiet_since = clock()
                    continue
                if clock() - quiet_since < WARM_EVERY_S:
                    continue
                actor = warmers[turn]
                try:
                    actor.warm()
                    turn += 1
                except Exception as exc:  # a broken warm hook costs latency, never the node
                    self.log.warning("node.warm_failed", actor=actor.ctx.name, error=repr(exc))
                    warmers.remove(actor)
                if turn >= len(warmers):  # a round done (short idle spells take turns)
                    quiet_since, turn = clock(), 0

    async def _listen(self, host: str, port: int) -> None:
        try:
            await self.http.start(host, port)
        except OSError as exc:
            bad_host = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
            where = "[node] http_host" if bad_host else "[node] http_port"
            raise ListenError(f"cannot listen on {host}:{port}: {reason(exc)}", where) from exc

    def _start_failed(self, exc: Exception) -> None:
        """Record why the start failed (one line), and stop with the exit code that says so."""
        component = self._starting
        config: Any = self.settings.nats if component == "nats" else None
        if component in self.actors:
            config = self.settings.actor_config(component)
        self.failure = explain(
            exc, component=component, config=config, storage=self.settings.storage
        )
        self.exit_code = self.failure.exit_code
        self.log.error("node.start_failed", error=str(self.failure), exit_code=self.exit_code)
        # Formatted here, not by exc_info: the renderers would add local variables (DSNs).
        self.log.debug("node.start_failed.traceback", traceback=format_traceback(exc))
        if not self._egress_started:
            self._egress_done.set()  # nothing to wait for when draining
        self._stop.set()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stop.is_set():
                    self.log.warning("node.cancelled", signal=signum)
                    self.cancel()
                    return
                self.log.info("node.draining", signal=signum)
                self.stop()

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        if self.mirror is not None:
            self._starting = "nats"
            await self._connect(self.mirror)

            async def egress() -> None:
                assert self.mirror is not None
                try:
                    await self.mirror.run_egress()
                finally:
                    self._egress_done.set()

            tg.start_soon(egress)
            self._egress_started = True
        for runner in self.runners:  # the readiness barrier: every on_start has returned
            self._starting = runner.name
            await runner.start()
        self._starting = "nats"
        if self.replay is not None:
            tg.start_soon(self.replay.pump)
        for runner in self.runners:
            if runner.mailbox is not None and self.replay is None:
                tg.start_soon(runner.run_inbox)
            if runner.actor.tick_interval_s > 0:  # wall-clock timers run in replay too
                tg.start_soon(self._ticks, runner)
        if self.mirror is not None:
            remote = self.remote_types()
            if remote:
                await self.mirror.start_ingress(
                    remote, self.bus.deliver_remote, self.bus.deliver_remote_nowait
                )
            if self.settings.nats.settle_nodes > 1:
                await self.mirror.serve_settle(self._settle_local)
        sources = [r for r in self.runners if r.is_source]
        self._sources_left = len(sources)
        for runner in sources:
            scope = anyio.CancelScope()
            self._source_scopes.append((runner, scope))
            tg.start_soon(self._source, runner, scope)

    async def _connect(self, mirror: NatsMirror) -> None:
        """Connect to NATS, giving up after ``[nats] connect_timeout_s`` (the client retries)."""
        cfg = self.settings.nats
        with anyio.move_on_after(cfg.connect_timeout_s) as scope:
            await mirror.connect()
        if scope.cancelled_caught:
            why = await probe(cfg.url, 4222)
            raise UnavailableError(
                f"cannot reach NATS at {address(cfg.url, 4222)}: {why}", "[nats] url"
            )

    async def _ticks(self, runner: ActorRunner) -> None:
        scope = anyio.CancelScope()
        self._tick_scopes.append(scope)
        with scope:
            await runner.run_ticks(runner.actor.tick_interval_s)

    async def _source(self, runner: ActorRunner, scope: anyio.CancelScope) -> None:
        await runner.run_source(scope)
        self._sources_left -= 1
        if self._sources_left == 0 and self.settings.node.stop_when_sources_done:
            self.log.info("node.sources_done")
            self.stop()

    async def _drain(self, tg: anyio.abc.TaskGroup) -> None:
        started = time.monotonic()
        for _, scope in self._source_scopes:
            scope.cancel()
        for runner, _ in self._source_scopes:
            if runner.looping:
                await runner.finished.wait()
        if self.mirror is not None:
            await self.mirror.stop_ingress()
        for scope in self._tick_scopes:
            scope.cancel()
        await self._quiescent(self.settings.node.drain_timeout_s)
        by_actor = {id(r.actor): r for r in self.runners}
        for actor in drain_order(list(self.actors.values())):
            runner = by_actor[id(actor)]
            if runner.mailbox is not None:
                runner.mailbox.close()
                if self.replay is not None:
                    await self.replay.settle()  # what it still holds, as its loop would
            if runner.looping:
                with anyio.move_on_after(self.settings.node.drain_timeout_s):
                    await runner.finished.wait()
            await runner.stop()
        if self.mirror is not None:
            await self.mirror.close()
            with anyio.move_on_after(self.settings.node.drain_timeout_s):
                await self._egress_done.wait()
            await self.mirror.drain()
        self.log.info("node.drained", seconds=round(time.monotonic() - started, 3))

    async def _quiescent(self, timeout: float) -> None:
        """Wait until every mailbox is empty and no actor is busy, twice in a row."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            idle = all(
                r.finished.is_set() or (not r.busy and (r.mailbox is None or not len(r.mailbox)))
                for r in self.runners
            )
            calm = calm + 1 if idle else 0
            if calm >= 2:
                return
            await anyio.sleep(0.001)
        pending = {r.name: len(r.mailbox) for r in self.runners if r.mailbox and len(r.mailbox)}
        self.log.warning("node.drain_timeout", pending=pending)


__all__ = ["EXIT_CANCELLED", "EXIT_CRASH", "EXIT_OK", "Node", "core_out", "drain_order"]

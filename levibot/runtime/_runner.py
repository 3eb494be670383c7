"""One actor's life: its receive loop (or source loop), supervision and metrics."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from levibot.bus import Mailbox, MailboxClosed
from levibot.clock import Clock
from levibot.errors import SupervisionExhausted
from levibot.messages import Message
from levibot.runtime.actor import Actor, Policy, SourceActor
from levibot.runtime.metrics import Metrics


class ActorRunner:
    """Runs one actor's hooks and applies its supervision policy to failures."""

    def __init__(
        self,
        actor: Actor[Any],
        mailbox: Mailbox | None,
        *,
        clock: Clock,
        metrics: Metrics,
        log: Any,
        on_fatal: Callable[[str, BaseException], None],
    ) -> None:
        self.actor = actor
        self.name = actor.ctx.name
        self.mailbox = mailbox
        self.clock = clock
        self.log = log
        self.on_fatal = on_fatal
        self.busy = False
        self.started = False
        self.looping = False  # a receive or source loop was started
        self.finished = anyio.Event()
        self._failures: deque[float] = deque()
        self._live = not clock.is_replay
        labels = {"actor": self.name}
        self.m_handled = metrics.counter(
            "levibot_actor_handled_total", "Messages handled.", **labels
        )
        self.m_errors = metrics.counter(
            "levibot_actor_errors_total", "Exceptions raised by handle or run.", **labels
        )
        self.m_restarts = metrics.counter(
            "levibot_actor_restarts_total", "Restarts by supervision.", **labels
        )
        self.m_handle = metrics.histogram(
            "levibot_actor_handle_seconds", "Time spent in handle, per message.", actor=self.name
        )
        self.m_latency = metrics.histogram(
            "levibot_actor_latency_seconds",
            "From the causing tick's ingress to the start of handle here (live clock).",
            actor=self.name,
        )
        if mailbox is not None:
            metrics.gauge(
                "levibot_mailbox_depth", "Messages waiting.", fn=lambda: len(mailbox), **labels
            )
            metrics.gauge(
                "levibot_mailbox_dropped", "Messages conflated or dropped.",
                fn=lambda: mailbox.dropped, **labels,
            )  # fmt: skip

    @property
    def is_source(self) -> bool:
        """True for actors that produce from ``run``."""
        return isinstance(self.actor, SourceActor)

    async def start(self) -> None:
        """Call ``on_start``; failures here are fatal whatever the policy."""
        await self.actor.on_start()
        self.started = True

    async def stop(self) -> None:
        """Call ``on_stop`` once; a failure is logged, never raised (shutdown goes on)."""
        if not self.started:
            return
        self.started = False
        try:
            await self.actor.on_stop()
        except Exception as exc:
            self.log.error("actor.stop_failed", error=repr(exc))

    # -- loops ----------------------------------------------------------------------------

    async def run_inbox(self) -> None:
        """Handle messages until the mailbox is closed and drained."""
        assert self.mailbox is not None
        mailbox, actor, clock = self.mailbox, self.actor, self.clock
        max_batch = actor.max_batch
        perf = time.perf_counter_ns
        self.looping = True
        try:
            while True:
                try:
                    msg, done = await mailbox.get()
                except MailboxClosed:
                    return
                self.busy = True
                t0 = perf()
                if max_batch > 1 and len(mailbox):
                    batch = [(msg, done), *mailbox.get_nowait_batch(max_batch - 1)]
                    ok = await self._handle_batch(batch)
                    dones = [d for _, d in batch]
                    n = len(batch)
                else:
                    clock.observe(msg.ts_event)
                    if self._live and msg.ts_ingress:
                        self.m_latency.observe((time.time_ns() - msg.ts_ingress) * 1e-9)
                    try:
                        await actor.handle(msg)
                        ok = True
                    except Exception as exc:
                        ok = await self._failed(exc, msg)
                    dones = [done]
                    n = 1
                self.m_handle.observe((perf() - t0) * 1e-9 / n)
                self.m_handled.inc(n)
                self.busy = False
                if not ok:
                    return  # crashed: leave the rest unhandled (and unacked)
                for d in dones:
                    if d is not None:
                        d()
        finally:
            self.busy = False
            self.finished.set()

    async def _handle_batch(self, batch: list[tuple[Message, Any]]) -> bool:
        msgs = [m for m, _ in batch]
        for msg in msgs:
            self.clock.observe(msg.ts_event)
        if self._live:
            now = time.time_ns()
            for msg in msgs:
                if msg.ts_ingress:
                    self.m_latency.observe((now - msg.ts_ingress) * 1e-9)
        try:
            await self.actor.handle_batch(msgs)
            return True
        except Exception as exc:
            return await self._failed(exc, msgs[-1])

    async def run_source(self, scope: anyio.CancelScope) -> None:
        """Run the source until it is exhausted, cancelled or out of restarts."""
        assert isinstance(self.actor, SourceActor)
        self.looping = True
        try:
            with scope:
                while True:
                    try:
                        await self.actor.run()
                        return
                    except Exception as exc:
                        if not await self._failed(exc, None):
                            return
                        if self.actor.supervision.policy is Policy.SKIP:
                            return  # a source cannot skip a message: it just ends
        finally:
            self.finished.set()

    async def run_ticks(self, interval_s: float) -> None:
        """Call ``on_tick`` every ``interval_s`` until cancelled."""
        while True:
            await anyio.sleep(interval_s)
            try:
                await self.actor.on_tick()
            except Exception as exc:
                if not await self._failed(exc, None):
                    return

    # -- supervision ----------------------------------------------------------------------

    async def _failed(self, exc: Exception, msg: Message | None) -> bool:
        """Apply the policy to a failure; return False when the actor must stop (crash)."""
        self.m_errors.inc()
        sup = self.actor.supervision
        what = type(msg).__name__ if msg is not None else None
        if sup.policy is Policy.SKIP:
            self.log.warning("actor.message_skipped", message=what, error=repr(exc))
            return True
        if sup.policy is Policy.RESTART:
            now = time.monotonic()
            self._failures.append(now)
            while self._failures and now - self._failures[0] > sup.window_s:
                self._failures.popleft()
            if len(self._failures) <= sup.budget:
                delay = min(sup.backoff_s * 2 ** (len(self._failures) - 1), sup.max_backoff_s)
                self.log.warning(
                    "actor.restarting", message=what, error=repr(exc), backoff_s=delay,
                    failures=len(self._failures),
                )  # fmt: skip
                self.m_restarts.inc()
                await self.stop()
                await anyio.sleep(delay)
                try:
                    await self.start()
                    return True
                except Exception as start_exc:
                    exc = start_exc
            self.log.error("actor.budget_exhausted", error=repr(exc))
            self.on_fatal(self.name, SupervisionExhausted(self.name, exc))
            return False
        self.log.error("actor.crashed", message=what, error=repr(exc))
        self.on_fatal(self.name, exc)
        return False

"""One actor's life: its receive loop (or source loop), supervision and metrics."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from levibot import backoff
from levibot.bus import Delivery, Done, Mailbox, MailboxClosed, error_text
from levibot.clock import Clock
from levibot.errors import SupervisionExhausted
from levibot.messages import Message
from levibot.metrics import Metrics
from levibot.runtime.actor import Actor, Policy, SourceActor


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
        # Messages taken from the mailbox so far, handled or being handled (``backlog_mark``).
        self.taken = 0
        # Called when this actor turns idle with an empty mailbox (the node's settle watch).
        self.on_idle: Callable[[], None] | None = None
        self.started = False
        self.looping = False  # a receive or source loop was started
        self.finished = anyio.Event()
        self._failures: deque[float] = deque()
        self._poisoned: dict[str, float] = {}  # durable message key → when it last failed
        self._live = not clock.is_replay
        labels = {"actor": self.name}
        self.m_handled = metrics.counter(
            "levibot_actor_handled_total", "Messages handled.", **labels
        )
        self.m_errors = metrics.counter(
            "levibot_actor_errors_total", "Exceptions raised by handle or run.", **labels
        )
        self.m_poison = metrics.counter(
            "levibot_actor_durable_failures_total",
            "Durable messages whose handler raised (redelivered, then dead-lettered).",
            **labels,
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

    def backlog_mark(self) -> int:
        """Return how many messages this actor will have handled once everything now in its
        mailbox, or being handled, is (``handled_up_to`` tells when). For the receive loop,
        which ``taken`` counts: the replay scheduler never runs beside a NATS mirror."""
        return self.taken + (len(self.mailbox) if self.mailbox is not None else 0)

    def handled_up_to(self, mark: int) -> bool:
        """True once ``mark`` messages have been handled, or the actor has stopped for good."""
        return self.m_handled.value >= mark or self.finished.is_set()

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
                self.taken += 1
                t0 = perf()
                if max_batch > 1 and len(mailbox):
                    batch = [(msg, done), *mailbox.get_nowait_batch(max_batch - 1)]
                    self.taken += len(batch) - 1
                    dones = [d for _, d in batch]
                    ok = await self.handle_batch(batch, dones)
                    n = len(batch)
                else:
                    clock.observe(msg.ts_event)
                    if self._live and msg.ts_ingress:
                        self.m_latency.observe((time.time_ns() - msg.ts_ingress) * 1e-9)
                    dones = [done]
                    try:
                        await actor.handle(msg)
                        ok = True
                    except Exception as exc:
                        ok = await self.failed(exc, msg, dones)
                        dones = []  # settled by failed
                    n = 1
                self.m_handle.observe((perf() - t0) * 1e-9 / n)
                self.m_handled.inc(n)
                self.busy = False
                if not ok:
                    return  # crashed: leave the rest unhandled (and unacked)
                for d in dones:
                    if d is not None:
                        d()
                if not mailbox.size and self.on_idle is not None:
                    self.on_idle()
        finally:
            self.busy = False
            self.finished.set()
            if self.on_idle is not None:
                self.on_idle()

    async def handle_batch(self, batch: list[tuple[Message, Any]], dones: list[Done]) -> bool:
        """Handle ``batch`` with the actor's ``handle_batch``; return False when it must stop.

        A failure settles ``dones`` (and empties the list); otherwise the caller calls them.
        """
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
            # Which message failed is unknown: every durable one in the batch is retried (a
            # durable message is handled idempotently), the others follow the policy.
            ok = await self.failed(exc, msgs[-1], dones)
            dones.clear()  # settled by failed
            return ok

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
                        if not await self.failed(exc, None):
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
                if not await self.failed(exc, None):
                    return

    # -- supervision ----------------------------------------------------------------------
    #
    # A message that came from a durable consumer (a ``Delivery``) is never lost by a failed
    # handler: the transport redelivers it after a delay, and dead-letters it (with an alert)
    # after ``[nats] max_deliver`` tries. So a failure there does not apply the policy as a
    # local failure would. The actor goes on with the next message: a deterministic poison
    # message costs ``max_deliver`` failures and one dead letter, never the process.
    #
    # A broken actor (every message fails) must still stop: each policy but ``skip`` counts the
    # *distinct* durable messages that failed within ``window_s`` (the redeliveries of one
    # message count once) and, past ``budget``, ends the node non-zero as before. ``restart``
    # also restarts the actor per failure, as for local messages. ``crash`` does not restart:
    # ``on_stop`` of a crash-policy actor persists its state, so a restart would not undo a
    # half-applied change anyway. What a raising handler changed before it raised stays (risk
    # and order validate their input first, so that is little: e.g. a command id marked as
    # seen, which makes the redelivery a no-op); an actor left truly inconsistent fails on the
    # following messages too and so exhausts the budget. Local messages (no redelivery
    # possible) keep the policy as it was.

    async def failed(self, exc: Exception, msg: Message | None, dones: Sequence[Done] = ()) -> bool:
        """Apply the policy to a failure and settle ``dones``; return False when the actor must
        stop (crash, or budget exhausted)."""
        self.m_errors.inc()
        durable = [d for d in dones if isinstance(d, Delivery)]
        if durable:
            return await self._failed_durable(exc, msg, dones, durable)
        ok = await self._apply_policy(exc, msg)
        if ok:
            for d in dones:
                if d is not None:
                    d()  # skipped or restarted past it: this message is done with
        return ok

    async def _failed_durable(
        self, exc: Exception, msg: Message | None, dones: Sequence[Done], durable: list[Delivery]
    ) -> bool:
        for d in dones:
            if isinstance(d, Delivery):
                d.fail(self.name, exc)  # a delayed redelivery, or the dead-letter stream
            elif d is not None:
                d()
        sup = self.actor.supervision
        what = type(msg).__name__ if msg is not None else None
        attempt = max(d.attempt for d in durable)
        self.m_poison.inc()
        if sup.policy is Policy.SKIP:
            self.log.warning(
                "actor.durable_failed", message=what, error=error_text(exc), attempt=attempt
            )
            return True
        now = time.monotonic()
        for d in durable:  # oldest first: a key seen again moves to the end
            self._poisoned.pop(d.key, None)
            self._poisoned[d.key] = now
        while self._poisoned and now - next(iter(self._poisoned.values())) > sup.window_s:
            del self._poisoned[next(iter(self._poisoned))]
        if len(self._poisoned) > sup.budget:
            self.log.error(
                "actor.budget_exhausted", error=error_text(exc), failing=len(self._poisoned)
            )
            self.on_fatal(self.name, SupervisionExhausted(self.name, exc))
            return False
        self.log.warning(
            "actor.durable_failed", message=what, error=error_text(exc), attempt=attempt,
            failing=len(self._poisoned), budget=sup.budget,
        )  # fmt: skip
        if sup.policy is Policy.RESTART:
            return await self._restart(exc, what, len(self._poisoned))
        return True

    async def _restart(self, exc: Exception, what: str | None, failures: int) -> bool:
        sup = self.actor.supervision
        delay = backoff.delay(failures - 1, sup.backoff_s, sup.max_backoff_s, jitter=False)
        self.log.warning(
            "actor.restarting", message=what, error=repr(exc), backoff_s=delay, failures=failures
        )
        self.m_restarts.inc()
        await self.stop()
        await anyio.sleep(delay)
        try:
            await self.start()
            return True
        except Exception as start_exc:
            self.log.error("actor.budget_exhausted", error=repr(start_exc))
            self.on_fatal(self.name, SupervisionExhausted(self.name, start_exc))
            return False

    async def _apply_policy(self, exc: Exception, msg: Message | None) -> bool:
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
                return await self._restart(exc, what, len(self._failures))
            self.log.error("actor.budget_exhausted", error=repr(exc))
            self.on_fatal(self.name, SupervisionExhausted(self.name, exc))
            return False
        self.log.error("actor.crashed", message=what, error=repr(exc))
        self.on_fatal(self.name, exc)
        return False

"""The replay scheduler: every actor's handlers run from one loop, with no task per actor.

A replay node with no NATS mirror has nothing to wait for but its own actors, and its sources
settle after every event (``ctx.settle()``). Under the receive loops (one task per actor) each
message costs a task switch and each settle a wait on the runners; here the mailboxes are
``ReplayMailbox``es that queue themselves on one ``ready`` queue when a message arrives, and
``settle`` drains that queue in the caller's own task: it pops a mailbox, lets its runner
handle everything pending in it, and goes on until the queue is empty, which is when the
pipeline has settled.

The order is the receive loops' own, so results are the same to the byte: a mailbox is queued
when its first message arrives, as a waiting receive loop is woken then (in that order, by the
event loop's FIFO of ready tasks); a runner handles everything in its mailbox before it gives
the turn up, as a receive loop does before its ``get`` waits; a mailbox that gets a message
while queued or being drained is not queued again, as a woken or running loop is not woken
again. (That is for sources that settle after every event, as the feed and journal_replay do
under the replay clock; what is published without a settle keeps each mailbox's FIFO order, but
how it interleaves with its publisher differs from the receive loops', which depended on when
the publisher yielded.) Handlers are awaited in place: one that really suspends (I/O) suspends
the settle with it, and another task's settle waits for this one to finish.

What is published outside a settle (timers, a source that never settles) is handled by the
pump task, woken when a mailbox is queued with no drain running.
"""

from __future__ import annotations

import asyncio
from collections import deque

import anyio.lowlevel

from levibot.bus._mailbox import ReplayMailbox
from levibot.runtime._runner import ActorRunner


class ReplayScheduler:
    """Drains the replay mailboxes of a node in the order the receive loops would have."""

    def __init__(self) -> None:
        self._ready: deque[ReplayMailbox] = deque()
        self._runners: dict[ReplayMailbox, ActorRunner] = {}
        self._running = False
        self._waiters: list[asyncio.Future[None]] = []
        self._pump: asyncio.Future[None] | None = None
        self._pumping = False  # the pump was woken (or is settling) since it last waited
        self.drains = 0  # runner drains so far (one per queued mailbox)

    def mailbox(self, name: str, capacity: int) -> ReplayMailbox:
        """Return a new mailbox queued on this scheduler."""
        return ReplayMailbox(name, capacity, wake=self._wake, relieve=self._relieve)

    def attach(self, runner: ActorRunner) -> None:
        """Drain ``runner``'s mailbox (one made by ``mailbox``) with ``runner``."""
        assert isinstance(runner.mailbox, ReplayMailbox)
        self._runners[runner.mailbox] = runner

    def _wake(self, mailbox: ReplayMailbox) -> None:
        self._ready.append(mailbox)
        if not self._running and not self._pumping:
            self._pumping = True  # once per pump pass, not a Future.done() per wake-up
            pump = self._pump
            if pump is not None and not pump.done():
                pump.set_result(None)

    async def _relieve(self) -> None:
        if not self._running:  # from inside a drain the mailbox just grows past its capacity
            await self.settle()

    async def settle(self) -> None:
        """Handle every queued message and what it causes, until nothing is left queued.

        The hot path of every backtest, so the drain is written out here rather than called
        (a coroutine less per event: 0.7% of a backtest's instructions per bar): each queued
        mailbox's runner handles everything pending in it, as ``ActorRunner.run_inbox`` does
        between two waits (batched the same way, same supervision), then the mailbox may be
        queued again. A crashed actor's mailbox stays marked queued, so it is never drained
        again.

        Neither the latency histogram (it is live-clock only) nor ``handle_seconds`` is kept:
        the replay nodes of ``levibot backtest`` and ``levibot replay`` serve no metrics (their
        ``http_port`` is -1), and ``handled_total`` still counts every message.

        Nor is each message's event time observed on the clock, as the receive loops do: with
        no NATS (the only case the scheduler runs in) every message starts at a local source,
        which observes its time before it publishes (``levibot.feeds``, ``journal_replay``),
        and what actors publish in turn is stamped with a cause's time or the clock's, never
        later, so observing again could never move the clock
        (``tests/unit/test_replay_scheduler.py`` checks that both paths end on the same clock
        with the same messages).
        """
        while self._running:  # another task's drain is awaiting a handler: wait for its end
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        ready = self._ready
        if not ready:
            return
        self._running = True
        runners = self._runners
        try:
            while ready:
                mailbox = ready.popleft()
                runner = runners[mailbox]
                actor, slots = runner.actor, mailbox.pending
                max_batch = actor.max_batch
                self.drains += 1
                handled, ok = 0, True
                runner.busy = True
                try:
                    while mailbox.size:
                        if max_batch > 1 and mailbox.size > 1:
                            batch = mailbox.get_nowait_batch(max_batch)
                            handled += len(batch)
                            dones = [d for _, d in batch]
                            ok = await runner.handle_batch(batch, dones)
                            if not ok:
                                break
                            for d in dones:
                                if d is not None:
                                    d()
                            continue
                        mailbox.size -= 1  # ``get_nowait`` inlined: once per message
                        msg, done = slots.popleft()
                        handled += 1
                        try:
                            await actor.handle(msg)
                        except Exception as exc:
                            ok = await runner.failed(exc, msg, [done])  # settles ``done``
                            if not ok:
                                break
                            continue
                        if done is not None:
                            done()
                except BaseException:  # cancelled mid-drain: what is left stays queued
                    if mailbox.size:
                        ready.appendleft(mailbox)
                    else:
                        mailbox.queued = False
                    raise
                finally:
                    runner.busy = False
                    runner.m_handled.value += handled  # ``inc`` inlined: a call per drain
                if ok:
                    mailbox.queued = False
                else:  # crashed: the rest stays unhandled (and unacked), the mailbox queued
                    runner.finished.set()
                    await anyio.lowlevel.checkpoint()  # let the node's stop begin
        finally:
            self._running = False
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def pump(self) -> None:
        """Handle what is published outside a settle; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._pump = loop.create_future()
            self._pumping = False
            if self._ready and not self._running:
                self._pump.set_result(None)
            await self._pump
            self._pumping = True
            await self.settle()

"""Distributed settle, for a replay split across processes.

A replay source that waits for "everything caused so far has been handled" must see past
its own process. A settle round asks every node to become quiescent (mailboxes empty,
egress confirmed, its JetStream consumers with nothing pending or unacked), flush its
connection and answer with how many messages it has published. NATS delivers one
connection's messages in order, so a round's request reaches each node after everything
flushed before the previous round's answers. Two rounds in a row with the same total
means no node published in between: the whole system is quiescent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import nats.errors
from nats.aio.msg import Msg

if TYPE_CHECKING:
    from levibot.bus._ingress import Ingress


class SettleMixin:
    """The settle protocol of ``NatsMirror`` (kept apart: it is used only by split replay)."""

    nc: Any
    node: str
    log: Any
    core: Any
    durable: Any
    m_published: Any
    _ns: str
    ingress: Ingress
    _subs: list[Any]

    def _settle_subject(self) -> str:
        return f"{self._ns}lb.settle"

    async def _quiesce(self, local_settle: Callable[[], Awaitable[None]]) -> None:
        while True:
            await local_settle()
            if not self.core.idle or not self.durable.idle:
                await anyio.lowlevel.checkpoint()
                continue
            if await self.ingress.durable_pending():
                await anyio.sleep(0.0005)
                continue
            await self.nc.flush()
            return

    async def serve_settle(self, local_settle: Callable[[], Awaitable[None]]) -> None:
        """Answer settle rounds from a replay source on another node."""

        async def cb(raw: Msg) -> None:
            await self._quiesce(local_settle)
            await raw.respond(f"{self.node} {int(self.m_published.value)}".encode())

        self._subs.append(await self.nc.subscribe(self._settle_subject(), cb=cb))

    async def settle_cluster(
        self, nodes: int, local_settle: Callable[[], Awaitable[None]], deadline_s: float = 600.0
    ) -> None:
        """Return once all ``nodes`` (this one included) are quiescent together.

        A node that does not answer (it crashed and is being restarted) makes the round start
        over, until ``deadline_s`` has passed.
        """
        previous = -1
        with anyio.fail_after(deadline_s):
            while True:
                await self._quiesce(local_settle)
                inbox = self.nc.new_inbox()
                sub = await self.nc.subscribe(inbox)
                await self.nc.publish(self._settle_subject(), b"", reply=inbox)
                total = int(self.m_published.value)
                answers: dict[str, int] = {}
                try:
                    while len(answers) < nodes - 1:
                        raw = await sub.next_msg(timeout=2.0)
                        answer = parse_answer(raw.data)
                        if answer is None:  # not a settle answer: counted out, never fatal
                            self.log.warning("nats.settle_bad_answer", data=raw.data[:40])
                            continue
                        answers[answer[0]] = answer[1]
                except nats.errors.TimeoutError:
                    self.log.warning("nats.settle_waiting", answered=len(answers), nodes=nodes)
                    previous = -1
                    continue
                finally:
                    await sub.unsubscribe()
                total += sum(answers.values())
                if total == previous:
                    return
                previous = total


def parse_answer(data: bytes) -> tuple[str, int] | None:
    """Return ``(node, published count)`` of a settle answer, None when it is not one."""
    try:
        node, sep, count = data.decode().partition(" ")
        value = int(count)
    except (UnicodeDecodeError, ValueError):
        return None
    return (node, value) if sep and node and value >= 0 else None

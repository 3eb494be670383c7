"""The node's own durable deliveries (``levibot.bus._own``): acked at once when nothing local is
pending, else held until the backlog at their arrival is handled, oldest first."""

from __future__ import annotations

import anyio
import pytest

from levibot.bus._own import OwnCopies
from levibot.testing import eventually

pytestmark = pytest.mark.anyio


class Backlog:
    """A stand-in for the node's mailboxes: ``queued`` messages in all, ``handled`` so far."""

    def __init__(self) -> None:
        self.queued = 0
        self.handled = 0

    def __call__(self) -> object:
        mark = self.queued
        return lambda: self.handled >= mark


def test_nothing_pending_acks_on_arrival() -> None:
    acked: list[str] = []
    own = OwnCopies(acked.append, Backlog())
    own.add("a")
    assert acked == ["a"] and not own.held


def test_a_mirror_without_a_node_acks_on_arrival() -> None:
    acked: list[str] = []
    OwnCopies(acked.append).add("a")
    assert acked == ["a"]


def test_a_copy_waits_for_the_backlog_at_its_arrival_not_for_an_idle_node() -> None:
    acked: list[str] = []
    backlog = Backlog()
    own = OwnCopies(acked.append, backlog)
    backlog.queued = 2
    own.add("a")  # two messages queued locally: one of them is a's local copy
    backlog.queued = 5
    own.add("b")
    own.release()
    assert acked == []
    backlog.handled = 2  # a's backlog handled; three more queued since, b's among them
    own.release()
    assert acked == ["a"]
    own.add("c")  # held behind b, in order, even though nothing more came since b
    backlog.handled = 5
    own.release()
    assert acked == ["a", "b", "c"]


async def test_run_releases_held_copies_and_close_releases_the_rest() -> None:
    acked: list[str] = []
    backlog = Backlog()
    own = OwnCopies(acked.append, backlog, interval_s=0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(own.run)
        backlog.queued = 1
        own.add("a")
        await anyio.sleep(0.01)
        assert acked == []
        backlog.handled = 1
        await eventually(lambda: acked, timeout=2)
        assert acked == ["a"]
        backlog.queued = 3
        own.add("b")
        backlog.handled = 3  # drained for the stop
        own.close()
        assert acked == ["a", "b"]
    # run returned after close

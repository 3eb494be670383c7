"""Which subjects a node subscribes to and which the JetStream stream captures."""

from __future__ import annotations

from levibot.bus._nats import _minimal, _patterns
from levibot.messages import Fill, PortfolioSnapshot, Signal, Tick
from tests.pipeline import Job, Num


def test_core_types_take_both_the_bare_root_and_everything_below_it() -> None:
    assert _patterns([Tick, Num, PortfolioSnapshot], durable_all=False) == {
        "lb.md.tick.>": False, "lb.md.tick": False, "lbtest.num.>": False, "lbtest.num": False,
        "lb.portfolio.>": False, "lb.portfolio": False,
    }  # fmt: skip


def test_durable_types_get_a_consumer_for_the_bare_root_only_where_it_is_their_subject() -> None:
    assert _patterns([Fill, Job], durable_all=False) == {
        "lb.order.event.>": True, "lbtest.job.>": True,
    }  # fmt: skip
    assert _patterns([PortfolioSnapshot, Signal], durable_all=True) == {
        "lb.portfolio.>": True, "lb.portfolio": True, "lb.signal.>": True,
    }  # fmt: skip


def test_stream_subjects_drop_what_a_wildcard_already_covers() -> None:
    subjects = {"lb.order.>", "lb.order.intent.>", "lb.portfolio", "lb.portfolio.>", "x.y"}
    assert _minimal(subjects) == ["lb.order.>", "lb.portfolio", "lb.portfolio.>", "x.y"]

"""Which subjects a node subscribes to and which the JetStream stream captures."""

from __future__ import annotations

from levibot.bus._nats import _minimal, _patterns
from levibot.bus._subjects import stream_subjects
from levibot.messages import Fill, Message, PortfolioSnapshot, Signal, Tick
from levibot.settings import NatsConfig
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


def test_durable_all_stream_carries_every_levibot_type_whatever_the_node_takes() -> None:
    config = NatsConfig(namespace="ns", durable_all=True)
    every = {
        "ns.lb.alert.>", "ns.lb.ctl.>", "ns.lb.order.>", "ns.lb.md.tick.>", "ns.lb.md.quote.>",
        "ns.lb.md.bar.>", "ns.lb.feat.>", "ns.lb.signal.>", "ns.lb.portfolio", "ns.lb.portfolio.>",
        "ns.lb.risk.>", "ns.lb.health.>",
    }  # fmt: skip
    # Nodes of different groups write the same set: an update from an older read removes nothing.
    assert set(_minimal(stream_subjects(config, [Tick]))) == every
    assert set(_minimal(stream_subjects(config, [Fill, PortfolioSnapshot]))) == every
    # Types defined elsewhere (plugins, tests) only come with the nodes that load them.
    assert set(_minimal(stream_subjects(config, [Tick, Num]))) == every | {"ns.lbtest.num.>"}
    # Never the whole lb.> : the dead-letter stream and the settle requests live beside it.
    assert not any(s.startswith(("ns.lb.dlq", "ns.lb.settle", "ns.lb.>")) for s in every)


def test_stream_carries_only_durable_types_without_durable_all() -> None:
    config = NatsConfig(namespace="ns")
    assert _minimal(stream_subjects(config, [Tick, Fill, Num])) == [
        "ns.lb.alert.>", "ns.lb.ctl.>", "ns.lb.order.>",
    ]  # fmt: skip
    assert "ns.lbtest.job.>" in stream_subjects(config, [Job])


def test_no_message_type_of_levibot_changes_the_durable_all_stream() -> None:
    # A type added to levibot.messages but not to CORE_TYPES would make nodes differ again.
    def subclasses(cls: type[Message]) -> list[type[Message]]:
        return [s for sub in cls.__subclasses__() for s in (sub, *subclasses(sub))]

    config = NatsConfig(durable_all=True)
    base = _minimal(stream_subjects(config, ()))
    ours = [t for t in subclasses(Message) if t.__module__.startswith("levibot.messages.")]
    assert len(ours) > 20
    for cls in ours:
        if cls.subject_root:
            assert _minimal(stream_subjects(config, [cls])) == base, cls

"""``[nats] mirror``: which core types a node sends to NATS, worked out from ``[groups]``."""

from __future__ import annotations

from typing import Any

import pytest

from levibot.bus import NatsMirror
from levibot.errors import ConfigError
from levibot.logging import get_logger
from levibot.messages import (
    Bar,
    Codec,
    Features,
    Heartbeat,
    Message,
    PortfolioSnapshot,
    Quote,
    RiskStatus,
    Signal,
    SymbolMessage,
    Tick,
)
from levibot.metrics import Metrics
from levibot.runtime.node import consumed_elsewhere
from levibot.settings import DEFAULT_GROUPS, load_settings
from tests.pipeline import GROUPS, Job, Num, Squared

PIPELINE = {"ingest": ["feed", "feature"], "scoring": ["scoring"], "execution": ["risk", "order"]}


def settings(groups: Any = GROUPS, **sections: Any) -> Any:
    return load_settings(
        None, environ={}, overrides={"node": {"plugins": ["tests.pipeline"]}, "groups": groups,
                                     **sections},
    )  # fmt: skip


def mirror(consumed: tuple[type[Message], ...]) -> NatsMirror:
    """A mirror that is never connected: enough to ask what it sends."""
    return NatsMirror(
        settings().nats, node="n", consumer_name="n", codec=Codec([Tick]), metrics=Metrics(),
        log=get_logger(), consumed_elsewhere=consumed,
    )  # fmt: skip


def test_a_node_mirrors_what_the_actors_of_the_groups_it_does_not_run_consume() -> None:
    s = settings()  # source: counter → Num, Job; work: square ← Num, Job; out: sink ← Squared
    assert set(consumed_elsewhere(s, ("source",))) == {Num, Job, Squared}
    assert set(consumed_elsewhere(s, ("source", "work"))) == {Squared}
    assert consumed_elsewhere(s, ("source", "work", "out")) == ()


def test_partitioned_consumers_are_elsewhere_too_when_there_are_several_replicas() -> None:
    one = settings()
    two = settings(node={"plugins": ["tests.pipeline"], "partition_count": 2})
    assert set(consumed_elsewhere(one, ("source", "work"))) == {Squared}
    # square is partitioned: its other replica takes Num from this one's counter.
    assert set(consumed_elsewhere(two, ("source", "work"))) == {Num, Job, Squared}
    # sink is not partitioned: a replica never sends to another replica's sink.
    assert consumed_elsewhere(two, ("source", "work", "out")) == (Num, Job)


def test_mirror_all_sends_every_type() -> None:
    s = settings(nats={"mirror": "all"})
    assert consumed_elsewhere(s, ("source", "work", "out")) == (Message,)
    assert mirror((Message,)).mirrors(Heartbeat)


def test_a_misspelt_mirror_mode_fails_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"\$\.nats\.mirror"):
        settings(nats={"mirror": "consume"})


def test_a_type_goes_out_when_it_is_a_subclass_of_what_is_consumed_elsewhere() -> None:
    m = mirror((SymbolMessage,))  # as the local bus routes: issubclass(type, consumes)
    assert m.mirrors(Tick) and m.mirrors(Bar)
    assert not m.mirrors(Heartbeat) and not m.mirrors(RiskStatus)
    assert not mirror(()).mirrors(Tick)


def test_the_split_pipeline_keeps_executions_own_status_at_home() -> None:
    s = settings(PIPELINE)
    ingest = mirror(consumed_elsewhere(s, ("ingest",)))
    assert all(ingest.mirrors(t) for t in (Tick, Quote, Bar, Features))  # order, scoring, risk
    assert mirror(consumed_elsewhere(s, ("scoring",))).mirrors(Signal)  # risk
    execution = mirror(consumed_elsewhere(s, ("execution",)))
    assert not execution.mirrors(RiskStatus) and not execution.mirrors(PortfolioSnapshot)


def test_with_the_default_groups_the_sidecars_and_the_store_take_executions_status() -> None:
    s = load_settings(None, environ={}, overrides={"groups": DEFAULT_GROUPS})
    execution = mirror(consumed_elsewhere(s, ("execution",)))
    assert execution.mirrors(RiskStatus)  # gateway, telegram
    assert execution.mirrors(PortfolioSnapshot)  # store, gateway, telegram
    assert not execution.mirrors(Heartbeat)

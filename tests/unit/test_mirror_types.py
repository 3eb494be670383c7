"""``[nats] mirror``: which core types a node sends to NATS, worked out from ``[groups]``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from levibot.config import Config
from levibot.errors import ConfigError
from levibot.messages import (
    Bar,
    Features,
    Heartbeat,
    PortfolioSnapshot,
    Quote,
    RiskStatus,
    Signal,
    SymbolMessage,
    Tick,
)
from levibot.registry import register
from levibot.runtime import Actor
from levibot.runtime.node import core_out
from levibot.settings import load_settings
from tests.pipeline import GROUPS, Num

PIPELINE = {"ingest": ["feed", "feature"], "scoring": ["scoring"], "execution": ["risk", "order"]}


class AnySymbol(Actor[Config]):
    """Consumes a parent type: every symbol message reaches it."""

    name = "mir_any_symbol"
    consumes = (SymbolMessage,)


register(AnySymbol.name, f"{__name__}:AnySymbol")


def settings(groups: Any = GROUPS, **sections: Any) -> Any:
    return load_settings(
        None, environ={}, overrides={"node": {"plugins": ["tests.pipeline"]}, "groups": groups,
                                     **sections},
    )  # fmt: skip


def test_a_type_goes_out_when_an_actor_of_a_group_the_node_does_not_run_consumes_it() -> None:
    s = settings()  # source: counter → Num; work: square ← Num (partitioned); out: sink
    assert core_out(s, ("source",), [Num]) == {Num: True}
    assert core_out(s, ("source", "work"), [Num]) == {Num: False}  # square is here


def test_a_partitioned_consumer_is_elsewhere_too_when_there_are_several_replicas() -> None:
    two = settings(node={"plugins": ["tests.pipeline"], "partition_count": 2})
    assert core_out(two, ("source", "work", "out"), [Num]) == {Num: True}


def test_mirror_all_sends_every_type() -> None:
    s = settings(nats={"mirror": "all"})
    assert core_out(s, ("source", "work", "out"), [Num, Heartbeat]) == {Num: True, Heartbeat: True}


def test_a_misspelt_mirror_mode_fails_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"\$\.nats\.mirror"):
        settings(nats={"mirror": "consume"})


def test_a_subclass_of_what_an_actor_elsewhere_consumes_goes_out() -> None:
    s = settings({"here": ["counter"], "there": ["mir_any_symbol"]})
    assert core_out(s, ("here",), [Tick, Bar, Heartbeat]) == {
        Tick: True, Bar: True, Heartbeat: False,
    }  # fmt: skip


def test_the_split_pipeline_keeps_executions_own_status_at_home() -> None:
    s = settings(PIPELINE)
    ingest = core_out(s, ("ingest",), [Tick, Quote, Bar, Features])
    assert all(ingest.values())  # order, scoring, risk
    assert core_out(s, ("scoring",), [Signal]) == {Signal: True}  # risk
    execution = core_out(s, ("execution",), [RiskStatus, PortfolioSnapshot])
    assert execution == {RiskStatus: False, PortfolioSnapshot: False}  # only risk and order


def test_with_the_default_groups_the_store_and_gateway_take_executions_status() -> None:
    s = load_settings(None, environ={})
    execution = core_out(s, ("execution",), [RiskStatus, PortfolioSnapshot])
    assert execution == {RiskStatus: True, PortfolioSnapshot: True}


def test_deciding_stops_importing_actors_once_every_type_is_decided() -> None:
    """With the default groups, an ingest node's types are all consumed by execution: the
    telegram actor (aiogram: seconds and 130 MiB) is never imported."""
    code = (
        "import sys\n"
        "from levibot.messages import Bar, Features, Quote, Tick\n"
        "from levibot.runtime.node import core_out\n"
        "from levibot.settings import load_settings\n"
        "s = load_settings(None, environ={})\n"
        "out = core_out(s, ('ingest',), [Tick, Quote, Bar, Features])\n"
        "print(all(out.values()), 'sidecars.telegram.actor' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["True", "False"]

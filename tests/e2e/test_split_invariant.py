"""The invariant with the real actors: the same real data through one process and through the
groups split into processes over a real NATS server gives identical orders and fills, bit for
bit; with the scoring group at two partitions too."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from levibot.data import ensure_btcusdt
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BARS = 1_500


def make_config(tmp: Path, name: str, nats: dict[str, object] | None) -> Path:
    return write_config(
        tmp / f"{name}.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "replay": True, "drain_timeout_s": 30.0},
            "storage": {"data_dir": str(tmp / name)},
            "nats": nats or {},
            "groups": {
                "all": ["feed", "feature", "scoring", "risk", "order", "order_log"],
                "ingest": ["feed", "feature"],
                "scoring": ["scoring"],
                "execution": ["risk", "order", "order_log"],
            },
            "feed": {},
            "feed.replay": {"path": str(ensure_btcusdt()), "limit": BARS},
            "scoring": {"strategies": ["ema_cross"]},
            "risk": {
                "preset": "normal",
                "sizing": "all_in",
                "persist": False,
                "decide_after_portfolio": True,
            },
            "order": {"fill": "next_open", "persist": False},
            "order_log": {"path": str(tmp / f"{name}.orders")},
        },
    )


def run_single(tmp: Path) -> list[str]:
    cfg = make_config(tmp, "single", None)
    node = NodeProcess(
        cfg, "--groups", "all", log=tmp / "single.log",
        env={"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"},
    )  # fmt: skip
    assert node.wait(120) == 0, node.tail()
    return (tmp / "single.orders").read_text().splitlines()


def run_split(tmp: Path, scoring_partitions: int) -> list[str]:
    name = f"split{scoring_partitions}"
    ns = f"inv{uuid.uuid4().hex[:8]}"
    nodes_total = 2 + scoring_partitions
    cfg = make_config(
        tmp, name,
        {"url": NATS_URL, "namespace": ns, "stream": ns.upper(),
         "settle_nodes": nodes_total},
    )  # fmt: skip
    downstream = [NodeProcess(cfg, "--groups", "execution", log=tmp / f"{name}-exec.log")]
    for i in range(scoring_partitions):
        downstream.append(
            NodeProcess(
                cfg, "--groups", "scoring", "--partition", f"{i}/{scoring_partitions}",
                log=tmp / f"{name}-scoring{i}.log",
            )
        )  # fmt: skip
    try:
        for node in downstream:
            node.wait_ready()
        ingest = NodeProcess(
            cfg, "--groups", "ingest", log=tmp / f"{name}-ingest.log",
            env={"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"},
        )  # fmt: skip
        assert ingest.wait(300) == 0, ingest.tail()
    finally:
        for node in downstream:
            node.signal(signal.SIGTERM)
        for node in downstream:
            assert node.wait(60) == 0, node.tail()
    return (tmp / f"{name}.orders").read_text().splitlines()


def test_split_groups_over_nats_give_identical_orders_and_fills(tmp_path: Path) -> None:
    single = run_single(tmp_path)
    assert len(single) > 10, "the strategy should trade on 1,500 real bars"
    assert run_split(tmp_path, 1) == single
    assert run_split(tmp_path, 2) == single

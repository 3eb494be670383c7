"""The runtime across OS processes over a real NATS server.

(a) one process vs three processes: identical output; (b) kill -9 of the worker mid-stream:
durable messages neither lost nor duplicated; (c) NATS restarted under load: nodes reconnect,
durable messages survive.
"""

from __future__ import annotations

import signal
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from levibot.testenv import NATS_URL
from levibot.testing import NatsServer, NodeProcess, wait_until, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_NATS = NATS_URL


def config(tmp_path: Path, nats_url: str, count: int, *, jobs: bool, name: str) -> Path:
    ns = f"t{uuid.uuid4().hex[:10]}"
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "drain_timeout_s": 10.0},
            "nats": {"url": nats_url, "namespace": ns, "stream": ns.upper(), "ack_wait_s": 3.0},
            "groups": {"source": ["counter"], "work": ["square"], "out": ["sink"]},
            "counter": {"count": count, "jobs": jobs, "pace_every": 50},
            "sink": {"path": str(tmp_path / f"{name}.out")},
        },
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name))


def start(cfg: Path, groups: str, tmp_path: Path, *extra: str, **kw: Any) -> NodeProcess:
    node = NodeProcess(cfg, "--groups", groups, *extra, log=tmp_path / f"{groups}.log", **kw)
    node.wait_ready()
    return node


def test_three_processes_over_nats_give_the_same_output_as_one(tmp_path: Path) -> None:
    count = 3_000
    single = write_config(
        tmp_path / "single.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "stop_when_sources_done": True},
            "groups": {"all": ["counter", "square", "sink"]},
            "counter": {"count": count, "pace_every": 50},
            "sink": {"path": str(tmp_path / "single.out")},
        },
    )
    one = NodeProcess(single, "--groups", "all", log=tmp_path / "single.log")
    assert one.wait(60) == 0, one.tail()
    expected = lines(tmp_path / "single.out")
    assert len(expected) == count

    cfg = config(tmp_path, SHARED_NATS, count, jobs=False, name="split")
    out = start(cfg, "out", tmp_path)
    work = start(cfg, "work", tmp_path)
    source = NodeProcess(
        cfg, "--groups", "source", log=tmp_path / "source.log",
        env={"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"},
    )  # fmt: skip
    try:
        assert source.wait(60) == 0, source.tail()
        wait_until(lambda: len(lines(tmp_path / "split.out")) >= count, 30, "all output")
    finally:
        for node in (work, out):
            node.signal(signal.SIGTERM)
            assert node.wait(30) == 0, node.tail()
    assert lines(tmp_path / "split.out") == expected


def test_kill_9_of_the_worker_loses_and_duplicates_no_durable_message(tmp_path: Path) -> None:
    count = 3_000
    cfg = config(tmp_path, SHARED_NATS, count, jobs=True, name="chaos")
    out_path = tmp_path / "chaos.out"
    out = start(cfg, "out", tmp_path)
    work = start(cfg, "work", tmp_path)
    source = start(cfg, "source", tmp_path)
    try:
        wait_until(lambda: len(lines(out_path)) >= 600, 30, "first results")
        work.proc.kill()  # SIGKILL: no drain, no acks for what was in flight
        work.proc.wait(10)
        killed_at = len(lines(out_path))
        assert killed_at < count, "the stream finished before the kill"
        work = start(cfg, "work", tmp_path)
        wait_until(lambda: len(lines(out_path)) >= count, 60, "all results after restart")
    finally:
        for node in (source, work, out):
            node.signal(signal.SIGTERM)
            node.wait(30)
    values = Counter(int(line.split()[1]) for line in lines(out_path))
    assert sorted(values) == list(range(count))  # none lost
    assert max(values.values()) == 1  # none duplicated


def test_nats_restart_under_load_reconnects_and_keeps_durable_messages(tmp_path: Path) -> None:
    count = 4_000
    server = NatsServer(tmp_path / "js")
    server.start()
    cfg = config(tmp_path, server.url, count, jobs=True, name="restart")
    out_path = tmp_path / "restart.out"
    nodes: list[NodeProcess] = []
    try:
        nodes.append(start(cfg, "out", tmp_path))
        nodes.append(start(cfg, "work", tmp_path))
        nodes.append(start(cfg, "source", tmp_path))
        wait_until(lambda: len(lines(out_path)) >= 500, 30, "first results")
        server.stop(signal.SIGKILL)
        assert len(lines(out_path)) < count, "the stream finished before the restart"
        server.start()  # same port, same JetStream store
        wait_until(lambda: len(lines(out_path)) >= count, 90, "all results after the restart")
        assert metric(nodes[1].port, "levibot_nats_reconnects_total") >= 1
        values = Counter(int(line.split()[1]) for line in lines(out_path))
        assert sorted(values) == list(range(count))
        assert max(values.values()) == 1
    finally:
        for node in nodes:
            node.signal(signal.SIGTERM)
            node.wait(30)
        server.stop()

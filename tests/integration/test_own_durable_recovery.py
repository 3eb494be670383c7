"""A durable message a process published to its own actors survives a kill -9 of that process.

``Node.remote_types``: a durable type a node both produces and consumes is also taken from NATS,
so that a restarted process gets what its predecessor published and never handled. The copy
NATS delivers back to the publisher itself is skipped (its local copy is in a local mailbox),
and must not be acked before that local copy is handled. Before, it was acked on arrival: with a
slow consumer, every message still queued locally at a kill -9 was acked in the stream and lost.

One ``levibot run`` process over the real NATS: counter → square → a slow sink (Squared is
durable), killed while the sink's mailbox still holds most of the squares; a second process with
the same consumer and no counter must hand the sink every square the first one did not.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, wait_until, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = 30


def config(tmp_path: Path, name: str, ns: str, count: int) -> Path:
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "http_port": 0},
            "groups": {"all": ["counter", "square", "sink"]},
            "counter": {"count": count, "symbols": ["AAA"]},
            "sink": {"path": str(tmp_path / "out"), "delay_s": 0.1},
            # What the killed process left unacked comes again after ack_wait.
            "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper(), "ack_wait_s": 1.0},
            "storage": {"data_dir": str(tmp_path / "var")},
        },
    )


def values(tmp_path: Path) -> list[int]:
    out = tmp_path / "out"
    return [int(line.split()[1]) for line in out.read_text().splitlines()] if out.exists() else []


def test_a_kill_9_loses_none_of_the_durable_messages_still_queued_locally(tmp_path: Path) -> None:
    ns = f"own{uuid.uuid4().hex[:8]}"
    first = NodeProcess(
        config(tmp_path, "first", ns, COUNT), "--groups", "all", log=tmp_path / "1.log"
    )
    second: Any = None
    try:
        first.wait_ready()
        wait_until(lambda: len(values(tmp_path)) >= 3, 30, "the sink's first lines")
        first.kill()  # kill -9: most squares are still in the sink's mailbox
        handled_before = set(values(tmp_path))
        assert len(handled_before) < COUNT // 2, "the sink was too fast for this test"
        second = NodeProcess(
            config(tmp_path, "second", ns, 0), "--groups", "all", log=tmp_path / "2.log"
        )
        second.wait_ready()
        wait_until(lambda: set(values(tmp_path)) == set(range(COUNT)), 30, "every square")
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert set(values(tmp_path)) == set(range(COUNT)), (first.tail(), second.tail())

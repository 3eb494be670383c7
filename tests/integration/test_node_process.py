"""``levibot run`` as a real process: SIGTERM drains, a second signal cancels, crashes exit 70."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from levibot.testing import NodeProcess, wait_until, write_config

pytestmark = pytest.mark.slow


def config(tmp_path: Path, sink: str = "sink", **sink_cfg: object) -> Path:
    return write_config(
        tmp_path / "c.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "drain_timeout_s": 60.0},
            "groups": {"all": ["counter", "square", sink]},
            "counter": {"count": 10**9, "pace_every": 20},
            sink: {"path": str(tmp_path / "out"), **sink_cfg},
        },
    )


def values(tmp_path: Path) -> list[int]:
    out = tmp_path / "out"
    return [int(line.split()[1]) for line in out.read_text().splitlines()] if out.exists() else []


def test_sigterm_drains_every_message_then_exits_zero(tmp_path: Path) -> None:
    node = NodeProcess(config(tmp_path), "--groups", "all", log=tmp_path / "log")
    node.wait_ready()
    wait_until(lambda: len(values(tmp_path)) > 1_000, 30, "output")
    node.signal(signal.SIGTERM)
    assert node.wait(60) == 0, node.tail()
    got = values(tmp_path)
    assert got == list(range(len(got)))  # contiguous: nothing in flight was dropped
    assert '"event": "node.drained"' in node.tail(10_000)


def test_a_second_signal_cancels_a_slow_drain_at_once(tmp_path: Path) -> None:
    node = NodeProcess(config(tmp_path, delay_s=0.01), "--groups", "all", log=tmp_path / "log")
    node.wait_ready()
    wait_until(lambda: len(values(tmp_path)) > 20, 30, "output")  # a backlog of thousands
    node.signal(signal.SIGTERM)
    wait_until(lambda: "node.draining" in node.tail(), 10, "draining")
    node.signal(signal.SIGTERM)
    assert node.wait(10) == 130, node.tail()


def test_a_crashed_actor_ends_the_process_non_zero(tmp_path: Path) -> None:
    node = NodeProcess(
        config(tmp_path, "fatal_sink", fail_on=[500]), "--groups", "all", log=tmp_path / "log"
    )
    assert node.wait(60) == 70, node.tail()
    assert values(tmp_path) == list(range(500))


def test_an_exhausted_restart_budget_ends_the_process_non_zero(tmp_path: Path) -> None:
    node = NodeProcess(
        config(tmp_path, "crashy_sink", fail_on=[100, 200, 300]),
        "--groups", "all", log=tmp_path / "log",
    )  # fmt: skip
    assert node.wait(60) == 70, node.tail()
    assert '"event": "actor.budget_exhausted"' in node.tail(20_000)


def test_a_config_typo_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[node]\nplugins = ["tests.pipeline"]\n[counter]\ncuont = 3\n')
    node = NodeProcess(cfg, log=tmp_path / "log")
    assert node.wait(30) == 2
    assert "unknown field `cuont` - at `$.counter`" in node.tail()

"""The event-loop lag probe: a loop held by blocking work shows as lateness in the metrics."""

from __future__ import annotations

import time

import anyio
import pytest

from levibot.metrics import Metrics
from levibot.runtime.loop_lag import LoopLag
from levibot.testing import eventually


@pytest.mark.anyio
async def test_a_loop_held_by_blocking_work_is_reported_as_lag() -> None:
    metrics = Metrics()
    lag = LoopLag(metrics, interval_s=0.02)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lag.run)
        await eventually(lambda: metrics.value("levibot_event_loop_lag_seconds") >= 1)
        time.sleep(0.2)  # noqa: ASYNC251 - the point: hold the loop as blocking I/O would
        seen = metrics.value("levibot_event_loop_lag_seconds")
        await eventually(lambda: metrics.value("levibot_event_loop_lag_seconds") > seen)
        tg.cancel_scope.cancel()
    # A 0.2 s hold delays the next wake-up by at least 0.2 s minus one interval.
    assert metrics.value("levibot_event_loop_lag_max_seconds") >= 0.2 - 0.02
    assert "levibot_event_loop_lag_seconds_bucket" in metrics.render()


def test_an_early_timer_counts_as_no_lag() -> None:
    metrics = Metrics()
    lag = LoopLag(metrics)
    lag.record(-0.001)
    lag.record(0.003)
    assert lag.max_s == pytest.approx(0.003)
    assert metrics.value("levibot_event_loop_lag_seconds") == 2

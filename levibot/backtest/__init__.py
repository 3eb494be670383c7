"""Backtest and replay: the real actors, one process, the replay clock, a recorder, a report.

``run_backtest(BacktestSpec(...))`` replays a kline CSV through feed → feature → scoring →
risk → order and returns a ``Recording``; ``write_outputs`` turns it into ``report.json``,
``trades.csv`` and ``equity.png``. ``replay_settings`` + ``run_node`` replay a store journal or
a data file through the groups of a config. Importing this package registers the ``recorder`` and
``journal_replay`` actors.
"""

from __future__ import annotations

from levibot.backtest.recorder import RecorderActor, RecorderConfig
from levibot.backtest.report import build_report, build_trades, equity_curve, write_outputs
from levibot.backtest.runner import (
    BacktestError,
    BacktestSpec,
    Recording,
    backtest_settings,
    replay_settings,
    resolve_data,
    run_backtest,
    run_node,
    strategy_overrides,
)
from levibot.backtest.sources import JournalReplayActor

__all__ = [
    "BacktestError",
    "BacktestSpec",
    "JournalReplayActor",
    "RecorderActor",
    "RecorderConfig",
    "Recording",
    "backtest_settings",
    "build_report",
    "build_trades",
    "equity_curve",
    "replay_settings",
    "resolve_data",
    "run_backtest",
    "run_node",
    "strategy_overrides",
    "write_outputs",
]

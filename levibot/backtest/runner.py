"""Run the real actors in one process under the replay clock, and keep what they produced.

``run_backtest(spec)`` builds a node whose only group is
``feed → feature → scoring → risk → order`` plus the ``recorder`` (no ``feature`` for a rule
strategy: it computes its own indicators from bars), with
``[node] replay = true`` (event-time clock, lossless mailboxes) and
``stop_when_sources_done = true``; the feed's replay source settles the pipeline after every
bar (``ctx.settle()``), so each bar is handled to the end (signal, intent, fill, snapshot)
before the next is published.
``run_replay(...)`` does the same for a journal or a data file with the groups of a config.

Nothing here persists: the risk and order actors run with ``persist = false``, so a run never
reads or writes ``var/state`` and two runs of the same input give the same messages.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

import levibot.backtest.recorder
import levibot.backtest.sources  # noqa: F401  (registers journal_replay)
from levibot.errors import LevibotError
from levibot.risk.sizing import SizingMode
from levibot.settings import Settings, load_settings
from levibot.strategies import RULES, STRATEGIES

FillMode = Literal["close", "next_open"]


class BacktestError(LevibotError):
    """A backtest or replay cannot run as asked (bad parameter, missing data, a crashed actor)."""


class BacktestSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to backtest and how; the CLI flags map one to one onto these fields."""

    data: str = ""  # kline CSV; "" → the real BTCUSDT 1h data (levibot.data.ensure_btcusdt)
    # Several kline CSVs, one symbol each (named in the file name), traded by one portfolio;
    # instead of ``data`` and ``symbol``.
    data_files: tuple[str, ...] = ()
    strategy: str = "ema_cross"
    params: dict[str, str] = {}  # strategy parameters, and `section.key` actor overrides
    cash: float = 10_000.0
    fee_bps: float = 10.0
    slippage_bps: float = 0.0
    fill: FillMode = "next_open"
    sizing: SizingMode = "all_in"
    symbol: str = "BTCUSDT"
    limit: int = 0  # replay at most this many bars; 0: all


class Recording(msgspec.Struct, kw_only=True):
    """What a run produced: the recorder's messages, the settings used and the timing."""

    recorder: Any
    settings: Settings
    exit_code: int
    wall_s: float
    data: str = ""
    cpu_s: float = 0.0  # CPU seconds of this process while the node ran (all threads)


_SECTIONS = ("feature", "scoring", "risk", "order", "feed")
_ACTORS = ("feed", "feature", "scoring", "order", "risk", "recorder")


def strategy_overrides(strategy: str, params: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Map ``--param k=v`` onto actor config sections.

    A rule strategy's own parameter by its name (``ema_cross``: ``fast=10 slow=30``, any
    spans; ``rsi_macd``: ``rsi``, ``fast``, ``slow``, ``signal``, ``overbought``,
    ``oversold``); any ``[scoring]`` field by its name (``long_threshold=0.6``,
    ``model_id=...``); any other actor field as ``section.key`` (``risk.notional=500``,
    ``order.snapshot_every_bars=24``). Values stay strings here; the config types convert and
    validate them (errors name the field, ``$.scoring.ema_cross.fast``).
    """
    from levibot.actors.scoring import ScoringConfig

    if strategy not in STRATEGIES:
        raise BacktestError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    out: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    own = RULES[strategy].params_type.__struct_fields__ if strategy in RULES else ()
    for key, value in params.items():
        section, dot, field = key.partition(".")
        if dot:
            if section not in _SECTIONS:
                raise BacktestError(
                    f"--param {key}: unknown section {section!r}; one of {_SECTIONS}"
                )
            out[section][field] = value
        elif key in own:
            out["scoring"].setdefault(strategy, {})[key] = value
        elif key in ScoringConfig.__struct_fields__:
            out["scoring"][key] = value
        else:
            known = [*own, "<scoring field>", "<section>.<field>"]
            raise BacktestError(f"--param {key}: unknown parameter; use one of {known}")
    return out


def resolve_data(data: str) -> Path:
    """Return the kline CSV to replay: ``data``, or the real BTCUSDT data (fetched once)."""
    if data:
        path = Path(data)
        if not path.is_file():
            raise BacktestError(f"data file not found: {path}")
        return path
    from levibot.data import ensure_btcusdt

    return ensure_btcusdt(None, False)


def backtest_settings(spec: BacktestSpec, data: Path) -> Settings:
    """Return the node settings of a backtest: one group, replay clock, permissive risk."""
    if spec.cash <= 0 or spec.fee_bps < 0 or spec.slippage_bps < 0:
        raise BacktestError("cash must be > 0, fee and slippage >= 0")
    sections = strategy_overrides(spec.strategy, spec.params)
    if spec.data_files:
        replay: dict[str, Any] = {"paths": list(spec.data_files), "limit": spec.limit}
    else:
        replay = {"path": str(data), "symbol": spec.symbol, "limit": spec.limit}
    feed = {"source": "replay", "replay": replay}
    feed.update(sections["feed"])
    overrides: dict[str, Any] = {
        "node": {
            "name": "backtest", "groups": ["backtest"], "replay": True,
            "stop_when_sources_done": True, "http_port": -1, "plugins": [],
        },
        "nats": {"url": ""},
        # A rule strategy computes its own indicators from bars: only the model needs features.
        "groups": {"backtest": [a for a in _ACTORS if a != "feature" or spec.strategy == "onnx"]},
        "feed": feed,
        "feature": sections["feature"],
        "scoring": {"strategies": [spec.strategy], "postgres_dsn": "", **sections["scoring"]},
        # preset "off": no limit interferes unless asked (--param risk.max_drawdown_pct=0.2);
        # no ATR exits unless asked (--param risk.atr_exits=true).
        "risk": {
            "preset": "off", "sizing": spec.sizing, "fee_bps": spec.fee_bps,
            "initial_equity": spec.cash, "atr_exits": False, "persist": False,
            "halt_on_breach": True,
            # A bar's exits and fills precede its signals, by design rather than by the
            # luck of which actor's message arrives first (the order actor snapshots each bar).
            "decide_after_portfolio": True, **sections["risk"],
        },
        "order": {
            "cash": spec.cash, "fee_bps": spec.fee_bps, "slippage_bps": spec.slippage_bps,
            "fill": spec.fill, "snapshot_every_bars": 1, "persist": False,
            "equity_curve_max": 10_000_000, **sections["order"],
        },
        "recorder": {},
    }  # fmt: skip
    return load_settings(None, environ={}, overrides=overrides)


async def run_node(settings: Settings, data: str = "") -> Recording:
    """Run a node built from ``settings`` to the end of its sources; return its recording."""
    from levibot.runtime.node import Node

    node = Node(settings)
    if "recorder" not in node.actors:
        raise BacktestError("the node has no recorder actor")
    started, cpu = time.perf_counter(), time.process_time()
    code = await node.run(handle_signals=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if code != 0:
        raise BacktestError(f"the replay node stopped with exit code {code} (see the log)")
    return Recording(
        recorder=node.actors["recorder"], settings=settings, exit_code=code, wall_s=wall,
        data=data, cpu_s=cpu,
    )  # fmt: skip


def symbols_of(spec: BacktestSpec) -> list[str]:
    """Return the symbols ``spec`` trades: ``symbol``, or each data file's (its name's)."""
    from levibot.data import infer_symbol

    if not spec.data_files:
        return [spec.symbol]
    return [infer_symbol(Path(name)) for name in spec.data_files]


async def run_backtest(spec: BacktestSpec) -> Recording:
    """Run ``spec`` through the real actors; return what they produced."""
    if spec.data_files:
        if spec.data:
            raise BacktestError("give the data as one file or as several files, not both")
        for name in spec.data_files:
            resolve_data(name)
        symbols = symbols_of(spec)
        if len(set(symbols)) != len(symbols):
            raise BacktestError(
                f"several data files need one symbol each (named in the file name: "
                f"ETHUSDT-1h.csv); these name {symbols}"
            )
        return await run_node(backtest_settings(spec, Path()), ",".join(spec.data_files))
    data = resolve_data(spec.data)
    return await run_node(backtest_settings(spec, data), str(data))


def replay_settings(
    *,
    journal: str = "",
    data: str = "",
    groups: Sequence[str] = ("ingest", "scoring", "execution"),
    config: str | None = None,
    symbol: str = "",
) -> Settings:
    """Return the settings of a replay: ``groups`` of ``config`` with the source swapped.

    For a journal the ``feed`` of those groups is replaced by ``journal_replay``; for a data
    file the feed replays it (``source = "replay"``). ``store`` is left out (a replay must not
    append to the journal it may be reading); risk and order do not persist. Every other actor
    runs with its section of ``config``; the environment overlay is not applied, so a replay
    is defined by its config file and flags alone.
    """
    if bool(journal) == bool(data):
        raise BacktestError("give exactly one of --journal or --data")
    if journal:
        from levibot.storage.journal import segments

        if not Path(journal).exists() or not segments(journal):
            raise BacktestError(f"no journal segments at {journal}")
    elif not Path(data).is_file():
        raise BacktestError(f"data file not found: {data}")
    base = load_settings(config, environ={})
    names: list[str] = []
    for group in groups:
        if group not in base.groups:
            raise BacktestError(f"unknown group {group!r}; groups are: {', '.join(base.groups)}")
        names.extend(n for n in base.groups[group] if n not in names)
    source = "journal_replay" if journal else "feed"
    actors = [n for n in names if n not in ("feed", "store", "gateway", "telegram")]
    members = [source, *actors, "recorder"]
    raw_sections: dict[str, Any] = {}
    if config is not None:
        from levibot.config import read_toml

        raw_sections = {k: v for k, v in read_toml(config).items() if isinstance(v, dict)}
    overrides: dict[str, Any] = {
        "node": {
            "name": "replay", "groups": ["replay"], "replay": True,
            "stop_when_sources_done": True, "http_port": -1,
        },
        "nats": {"url": ""},
        "groups": {"replay": members},
        "recorder": {},
    }  # fmt: skip
    if journal:
        overrides["journal_replay"] = {"path": journal}
    else:
        feed = dict(raw_sections.get("feed", {}))
        replay = {**feed.get("replay", {}), "path": data}
        if symbol:
            replay["symbol"] = symbol
        feed.update(source="replay", replay=replay)
        overrides["feed"] = feed
    for name in ("risk", "order"):
        if name in members:
            overrides[name] = {"persist": False}
    return load_settings(config, environ={}, overrides=overrides)

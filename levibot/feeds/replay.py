"""Replay recorded market data: kline CSVs become ``Bar`` messages, trade CSVs ``Tick`` ones.

Event time drives everything: each message's ``ts_event`` is observed by the clock before it is
stamped, so in replay ``ts_init == ts_ingress == ts_event`` and a run is bit-for-bit repeatable.
A kline's ``ts_event`` is its close (open time + timeframe), ``start`` its open time.

Several kline CSVs (``paths``, one symbol each) replay as one stream merged in time order:
bars closing at the same instant come in the order the files were given.

Trades CSV: a header naming ``timestamp`` (or ``date``/``time``/``ts``), ``price`` and ``size``
(or ``qty``/``quantity``/``amount``), optionally ``side`` (buy/sell), ``is_buyer_maker``,
``trade_id`` (or ``id``) and ``symbol``; timestamps as in the kline format. Rows must be in time
order; a bad row (unparseable, non-finite, price <= 0, size < 0, older than the previous row) is
dropped, counted in ``levibot_feed_rejected_total{reason}`` and logged.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.to_thread

from levibot.data import (
    Klines,
    KlinesError,
    ensure_btcusdt,
    infer_symbol,
    load_klines,
    parse_timestamp,
)
from levibot.feeds._base import YIELD_EVERY, Emit, Pacer, Source, counter
from levibot.feeds.config import ReplayConfig
from levibot.marketdata.timeframe import parse_timeframe
from levibot.messages import Bar, Side, Tick
from levibot.metrics import Counter

_SIZE = ("size", "qty", "quantity", "amount", "volume")
_TS = ("timestamp", "date", "time", "ts")


def _header(path: Path) -> tuple[int, list[str]]:
    """Return (line number, lower-cased names) of the first non-comment row."""
    try:
        # Undecodable bytes become U+FFFD: such a row is then malformed and counted, not fatal.
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                if fields and not fields[0].lstrip().startswith("#"):
                    return reader.line_num, [f.strip().lower() for f in fields]
    except (OSError, csv.Error) as exc:
        raise KlinesError(f"cannot read: {exc}", path=path) from None
    raise KlinesError("empty file: no header", path=path)


def _side(fields: list[str], side_i: int, maker_i: int) -> Side:
    """Return the aggressor side: a ``side`` column, else ``is_buyer_maker`` (true → SELL)."""
    if side_i >= 0:
        return Side.SELL if fields[side_i].strip().lower() in ("sell", "s") else Side.BUY
    if maker_i >= 0:
        return Side.SELL if fields[maker_i].strip().lower() in ("true", "1") else Side.BUY
    return Side.BUY


class _TradeColumns(NamedTuple):
    ts: int
    price: int
    size: int
    side: int
    maker: int
    trade_id: int
    symbol: int


def _trade_columns(path: Path, line: int, names: list[str]) -> _TradeColumns:
    index = {name: i for i, name in enumerate(names)}
    ts = next((index[a] for a in _TS if a in index), -1)
    size = next((index[a] for a in _SIZE if a in index), -1)
    if ts < 0 or size < 0 or "price" not in index:
        raise KlinesError(
            "a trades CSV needs timestamp, price and size columns", path=path, line=line
        )
    return _TradeColumns(
        ts, index["price"], size, index.get("side", -1), index.get("is_buyer_maker", -1),
        index.get("trade_id", index.get("id", -1)), index.get("symbol", -1),
    )  # fmt: skip


class ReplaySource(Source[ReplayConfig]):
    """Replay a CSV of klines or trades at ``speed`` × real time (0: as fast as possible)."""

    kind = "replay"

    async def open(self) -> None:
        """Resolve the file (fetching the real data when no path is set) and load klines."""
        cfg = self.config
        self._rejected: dict[str, Counter] = {}
        self._bad_rows = 0
        self.more: list[Klines] = []  # with ``paths``: the files after the first
        if cfg.paths:
            loaded = [await self._load_klines(Path(p), "") for p in cfg.paths]
            symbols = [k.symbol for k in loaded]
            if len(set(symbols)) != len(symbols):
                raise KlinesError(
                    f"feed.replay.paths: each file must hold another symbol, got {symbols}",
                    path=Path(cfg.paths[0]),
                )
            self.path, self.file_kind = Path(cfg.paths[0]), "klines"
            self.klines: Klines | None = loaded[0]
            self.more = loaded[1:]
            return
        if cfg.path:
            self.path = Path(cfg.path)
        else:
            storage = self.ctx.storage
            data_dir = (
                Path(cfg.data_dir)
                if cfg.data_dir
                else (Path(storage.data_dir) / "data" if storage is not None else None)
            )
            self.path = await anyio.to_thread.run_sync(lambda: ensure_btcusdt(data_dir, False))
        if not self.path.is_file():
            raise KlinesError("replay file not found", path=self.path)
        line, names = _header(self.path)
        if cfg.kind == "auto":
            self.file_kind = (
                "klines" if {"open", "high", "low", "close"} <= set(names) else "trades"
            )
        else:
            self.file_kind = cfg.kind
        if self.file_kind == "trades":
            self._columns = _trade_columns(self.path, line, names)
        self.klines = None
        if self.file_kind == "klines":
            self.klines = await self._load_klines(self.path, cfg.symbol)

    async def _load_klines(self, path: Path, symbol: str) -> Klines:
        k = await anyio.to_thread.run_sync(lambda: load_klines(path, symbol or None))
        if not self.config.timeframe and k.interval_ns <= 0:
            raise KlinesError(
                "cannot infer the timeframe (fewer than 2 bars); set feed.replay.timeframe",
                path=path,
            )
        for reason, n in k.dropped.items():
            self._reject(reason, n)
        if k.n_dropped:
            self.ctx.log.warning("feed.replay.rows_dropped", path=str(path), dropped=k.dropped)
        return k

    def _reject(self, reason: str, n: int = 1) -> None:
        counter_ = self._rejected.get(reason)
        if counter_ is None:
            counter_ = self._rejected[reason] = counter(
                self.ctx.metrics,
                "levibot_feed_rejected_total",
                "Input rows or messages the feed dropped as invalid, by reason.",
                source=self.kind,
                reason=reason,
            )
        counter_.inc(n)

    async def run(self, emit: Emit) -> None:
        """Emit every bar or trade of the file, in order."""
        if self.klines is not None:
            await self._run_klines([self.klines, *self.more], emit)
        else:
            await self._run_trades(emit)

    async def _run_klines(self, files: list[Klines], emit: Emit) -> None:
        cfg = self.config
        clock, pacer = self.ctx.clock, Pacer(cfg.speed)
        limit = cfg.limit or sum(len(k) for k in files)
        streams = [self._bars(k, i) for i, k in enumerate(files)]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
        paced = cfg.speed > 0
        for n, (end, _, symbol, timeframe, start, o, h, lo, c, v) in enumerate(merged):
            if n >= limit:
                break
            if paced:
                await pacer.wait(end)
            elif n % YIELD_EVERY == YIELD_EVERY - 1:  # Pacer.wait's yield, without its call
                await anyio.lowlevel.checkpoint()
            clock.observe(end)
            now = clock.now_ns()
            bar = Bar(
                ts_event=end, ts_init=now, ts_ingress=now, symbol=symbol, venue=self.venue,
                timeframe=timeframe, start=start, open=o, high=h, low=lo, close=c, volume=v,
            )  # fmt: skip
            self.count(bar)
            await emit(bar)

    def _bars(self, k: Klines, order: int) -> Iterator[tuple[Any, ...]]:
        """Yield ``(close time, file order, symbol, timeframe, open time, o, h, l, c, v)``."""
        cfg = self.config
        interval = parse_timeframe(cfg.timeframe) if cfg.timeframe else k.interval_ns
        timeframe = cfg.timeframe or k.timeframe
        columns = zip(
            k.ts.tolist(), k.open.tolist(), k.high.tolist(), k.low.tolist(),
            k.close.tolist(), k.volume.tolist(), strict=True,
        )  # fmt: skip
        for start, o, h, lo, c, v in columns:
            yield start + interval, order, k.symbol, timeframe, start, o, h, lo, c, v

    async def _run_trades(self, emit: Emit) -> None:
        clock, pacer = self.ctx.clock, Pacer(self.config.speed)
        trades = self._trades()
        if self.config.limit:
            trades = itertools.islice(trades, self.config.limit)
        for ts, symbol, price, size, side, trade_id in trades:
            await pacer.wait(ts)
            clock.observe(ts)
            now = clock.now_ns()
            tick = Tick(
                ts_event=ts, ts_init=now, ts_ingress=now, symbol=symbol, venue=self.venue,
                price=price, size=size, side=side, trade_id=trade_id,
            )  # fmt: skip
            self.count(tick)
            await emit(tick)

    def _trades(self) -> Iterator[tuple[int, str, float, float, Side, int]]:
        default_symbol = self.config.symbol or infer_symbol(self.path)
        ts_i, price_i, size_i, side_i, maker_i, id_i, sym_i = self._columns
        with self.path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            seen_header = False
            last = None
            for fields in reader:
                if not fields or fields[0].lstrip().startswith("#"):
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                try:
                    ts = parse_timestamp(fields[ts_i])
                    price, size = float(fields[price_i]), float(fields[size_i])
                    side = _side(fields, side_i, maker_i)
                    trade_id = int(fields[id_i]) if id_i >= 0 else 0
                    symbol = fields[sym_i].strip() if sym_i >= 0 else default_symbol
                except (ValueError, IndexError):
                    self._bad_row(reader.line_num, "malformed")
                    continue
                if not (math.isfinite(price) and math.isfinite(size)):
                    self._bad_row(reader.line_num, "non_finite")
                elif price <= 0 or size < 0:
                    self._bad_row(reader.line_num, "negative")
                elif last is not None and ts < last:
                    self._bad_row(reader.line_num, "out_of_order")
                else:
                    last = ts
                    yield ts, symbol, price, size, side, trade_id

    def _bad_row(self, line: int, reason: str) -> None:
        self._reject(reason)
        self._bad_rows += 1
        if self._bad_rows <= 10 or self._bad_rows % 1000 == 0:  # a garbage file must not flood
            self.ctx.log.warning(
                "feed.replay.bad_row", path=str(self.path), line=line, reason=reason,
                count=self._bad_rows,
            )  # fmt: skip

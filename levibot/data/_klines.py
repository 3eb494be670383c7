"""OHLCV kline files: load them into numpy arrays, validate every row, find the gaps.

The file format (what ``levibot data fetch`` writes and ``levibot features`` /
``levibot backtest --data`` read) is a CSV with a header naming at least
``timestamp,open,high,low,close,volume``; other columns are ignored and lines starting with
``#`` are comments. ``timestamp`` is the bar's **open** time, in UTC, either as an integer epoch
(seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude) or as ISO-8601
(``2017-08-17 04:00:00``, ``2017-08-17T04:00:00Z``; a naive time is UTC). ``date``,
``open_time`` and ``time`` are accepted as names of the timestamp column.

Bad rows are never fatal. Rule: a row is **dropped, counted by reason and reported** (line
number in ``Klines.rejects``, the first 100 kept) when

- ``malformed``: a missing field or one that does not parse as a number / timestamp;
- ``non_finite``: a NaN or infinite value;
- ``negative``: a price <= 0 or a volume < 0 (a volume of 0 is a valid, quiet bar);
- ``inconsistent``: high < low, or open/close outside [low, high];
- ``duplicate``: the same timestamp as the previous kept row (the first one wins);
- ``out_of_order``: a timestamp before the previous kept row.

``load_klines(..., strict=True)`` raises ``KlinesError`` with the line number instead. A file
that cannot be read or has no usable header always raises ``KlinesError``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from levibot.errors import LevibotError
from levibot.marketdata.timeframe import format_timeframe

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
_TS_ALIASES = ("timestamp", "date", "open_time", "time", "ts")
_SYMBOL = re.compile(r"([A-Z0-9]{2,}(?:USDT|USDC|BUSD|FDUSD|TUSD|USD|BTC|ETH|BNB|EUR|TRY))")
MAX_REJECTS_KEPT = 100

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class KlinesError(LevibotError):
    """A kline file cannot be read; ``line`` is the 1-based line number when one is at fault."""

    def __init__(self, message: str, *, path: str | Path = "", line: int = 0) -> None:
        where = f"{path}:{line}: " if line else (f"{path}: " if path else "")
        super().__init__(where + message)
        self.path = str(path)
        self.line = line


@dataclass(frozen=True, slots=True)
class Reject:
    """One dropped row: its 1-based line number in the file and why it was dropped."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True, eq=False)
class Klines:
    """OHLCV bars of one symbol as numpy arrays; ``ts`` is the open time in ns (int64, UTC)."""

    symbol: str
    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    dropped: dict[str, int] = field(default_factory=dict)  # reason → rows dropped
    rejects: tuple[Reject, ...] = ()  # the first MAX_REJECTS_KEPT dropped rows

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def interval_ns(self) -> int:
        """Return the bar interval: the most common step between consecutive open times."""
        if len(self) < 2:
            return 0
        steps, counts = np.unique(np.diff(self.ts), return_counts=True)
        return int(steps[int(np.argmax(counts))])

    @property
    def timeframe(self) -> str:
        """Return the bar interval as a timeframe string (``"1h"``), ``""`` if unknown."""
        interval = self.interval_ns
        return format_timeframe(interval) if interval > 0 else ""

    @property
    def n_dropped(self) -> int:
        """Return how many rows were dropped."""
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True)
class Gap:
    """A break in the bar grid: the step from bar ``prev`` to bar ``next`` is not ``interval``.

    Times are open times in ns. ``missing`` counts the whole bars that fit between the two
    (0 for a ``misaligned`` break, where the step is shorter and the grid shifts).
    """

    prev: int  # open time of the last bar before the break
    next: int  # open time of the first bar after it
    interval: int
    missing: int

    @property
    def start(self) -> int:
        """Return the open time of the first missing bar (``prev + interval``)."""
        return self.prev + self.interval

    @property
    def kind(self) -> str:
        """Return ``"missing"`` when bars are missing, ``"misaligned"`` when the grid shifts."""
        return "missing" if self.missing > 0 else "misaligned"

    def describe(self) -> str:
        """Return ``2017-09-06 16:00:00 → 2017-09-06 23:00:00: 7 bars missing`` style text."""
        if self.missing == 0:
            step_s = (self.next - self.prev) / 1e9
            return f"{iso(self.prev)} → {iso(self.next)}: misaligned, step {step_s:g}s"
        bars = "bar" if self.missing == 1 else "bars"
        return f"{iso(self.start)} → {iso(self.next)}: {self.missing} {bars} missing"


def iso(ts_ns: int) -> str:
    """Return ``ts_ns`` as an ISO-8601 UTC string without sub-second digits."""
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")


#: Integer epochs told apart by magnitude: below each bound (seconds below the year 5138,
#: then ms, µs), the factor to nanoseconds; above the last, nanoseconds already.
_EPOCH_SCALES = ((100_000_000_000, 1_000_000_000), (100_000_000_000_000, 1_000_000),
                 (100_000_000_000_000_000, 1_000))  # fmt: skip


def parse_timestamp(text: str) -> int:
    """Return a timestamp field (epoch s/ms/µs/ns or ISO-8601, UTC) in ns; ``ValueError`` if bad."""
    text = text.strip()
    if text and (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
        value = int(text)
        magnitude = abs(value)
        for bound, factor in _EPOCH_SCALES:
            if magnitude < bound:
                return value * factor
        return value
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def infer_symbol(path: Path) -> str:
    """Return the symbol named in a file name (``BTCUSDT-1h.csv`` → ``BTCUSDT``), else the stem."""
    match = _SYMBOL.search(path.name.upper())
    return match.group(1) if match else path.stem.upper()


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    for fields in reader:
        if not fields or fields[0].lstrip().startswith("#"):
            continue
        yield reader.line_num, fields


def _header_index(path: Path, header: list[str], line: int) -> list[int]:
    names = [h.strip().lower() for h in header]
    ts_col = next((names.index(a) for a in _TS_ALIASES if a in names), -1)
    missing = [c for c in COLUMNS[1:] if c not in names]
    if ts_col < 0 or missing:
        want = ",".join(COLUMNS)
        raise KlinesError(
            f"header must name {want} (missing: {', '.join(missing or ['timestamp'])})",
            path=path,
            line=line,
        )
    return [ts_col, *(names.index(c) for c in COLUMNS[1:])]


def _check(values: tuple[float, float, float, float, float]) -> str:
    o, h, lo, c, v = values
    # One test for all five: a NaN or an infinity anywhere makes the sum non-finite (and so
    # would finite values near float max, which are garbage too).
    if not math.isfinite(o + h + lo + c + v):
        return "non_finite"
    if o <= 0 or h <= 0 or lo <= 0 or c <= 0 or v < 0:
        return "negative"
    if h < lo or not (lo <= o <= h and lo <= c <= h):
        return "inconsistent"
    return ""


def load_klines(path: str | Path, symbol: str | None = None, *, strict: bool = False) -> Klines:
    """Load an OHLCV CSV (see the module docstring for the format and the bad-row rule)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise KlinesError(f"cannot read: {exc.strerror or exc}", path=path) from None
    except UnicodeDecodeError:
        raise KlinesError("not a UTF-8 text file", path=path) from None
    rows = _rows(text)
    first = next(rows, None)
    if first is None:
        raise KlinesError("empty file: no header", path=path)
    cols = _header_index(path, first[1], first[0])
    plain = _load_plain(text, cols)
    if plain is not None:
        ts, arr, dropped, rejects = plain[0], plain[1], Counter[str](), []
    else:
        ts, arr, dropped, rejects = _load_rows(path, rows, cols, strict)
    return Klines(
        symbol=symbol or infer_symbol(path),
        ts=ts,
        open=np.ascontiguousarray(arr[:, 0]),
        high=np.ascontiguousarray(arr[:, 1]),
        low=np.ascontiguousarray(arr[:, 2]),
        close=np.ascontiguousarray(arr[:, 3]),
        volume=np.ascontiguousarray(arr[:, 4]),
        dropped=dict(dropped),
        rejects=tuple(rejects),
    )


def _load_rows(
    path: Path, rows: Iterator[tuple[int, list[str]]], cols: list[int], strict: bool
) -> tuple[I64, F64, Counter[str], list[Reject]]:
    """Parse and check the data rows one by one: every bad row dropped (or raised), by reason."""
    width = max(cols) + 1
    ts: list[int] = []
    ohlcv: list[tuple[float, float, float, float, float]] = []
    dropped: Counter[str] = Counter()
    rejects: list[Reject] = []
    last = None
    for lineno, fields in rows:
        reason = ""
        try:
            if len(fields) < width:
                raise ValueError("missing fields")
            t = parse_timestamp(fields[cols[0]])
            if not _INT64_MIN <= t <= _INT64_MAX:  # past 2262 in ns: no int64 holds it
                raise OverflowError(t)
            values = (
                float(fields[cols[1]]),
                float(fields[cols[2]]),
                float(fields[cols[3]]),
                float(fields[cols[4]]),
                float(fields[cols[5]]),
            )
        except (ValueError, OverflowError):
            reason = "malformed"
        else:
            reason = _check(values)
            if not reason and last is not None and t <= last:
                reason = "duplicate" if t == last else "out_of_order"
        if reason:
            if strict:
                raise KlinesError(f"bad row ({reason}): {','.join(fields)}", path=path, line=lineno)
            dropped[reason] += 1
            if len(rejects) < MAX_REJECTS_KEPT:
                rejects.append(Reject(lineno, reason))
            continue
        ts.append(t)
        ohlcv.append(values)
        last = t
    arr = np.array(ohlcv, dtype=np.float64).reshape(-1, 5)
    return np.array(ts, dtype=np.int64), arr, dropped, rejects


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)

#: A data section ``_load_plain`` may parse at once: digits, points, exponents, minus signs.
#: No ``+``: numpy's integer parser takes ``+5`` where ``parse_timestamp`` refuses it.
_PLAIN_BODY = re.compile(r"[0-9.,eE\-\n]*")


def _load_plain(text: str, cols: list[int]) -> tuple[I64, F64] | None:
    """Parse a clean file in one numpy call; None when the row-by-row path must decide.

    The header on the first line, integer epochs, plain decimal numbers and ``\\n`` line
    ends only, and every row good (finite, positive, consistent, strictly increasing times).
    Within that, numpy reads each number as ``float()`` does (``PyOS_string_to_double``) and an
    epoch only when it is ``-?[0-9]+``, as ``parse_timestamp``, so the arrays are those of
    ``_load_rows``, three times sooner: a backtest loads its whole history before its first
    bar. Anything else (a bad row, a comment, quotes, ISO times, ``nan``) goes the careful way,
    with its reasons and line numbers.
    """
    header_end = text.find("\n")
    body = text[header_end + 1 :] if header_end >= 0 else ""
    if not body.strip() or not _PLAIN_BODY.fullmatch(body):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (not raises) on some empty input
            epoch = np.loadtxt(io.StringIO(body), delimiter=",", usecols=cols[0],
                               dtype=np.int64, ndmin=1, comments=None)  # fmt: skip
            arr = np.loadtxt(io.StringIO(body), delimiter=",", usecols=cols[1:],
                             dtype=np.float64, ndmin=2, comments=None)  # fmt: skip
    except (ValueError, OverflowError, UserWarning):
        return None
    o, h, lo, c, v = arr.T
    with np.errstate(all="ignore"):
        bad = (
            ~np.isfinite(o + h + lo + c + v)  # the same sum as ``_check``
            | (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0) | (v < 0)
            | (h < lo) | (o < lo) | (o > h) | (c < lo) | (c > h)
        )  # fmt: skip
    if len(epoch) != len(arr) or bad.any():
        return None
    magnitude = np.abs(epoch)
    scale = np.ones_like(epoch)
    for bound, factor in reversed(_EPOCH_SCALES):
        scale[magnitude < bound] = factor
    if (magnitude > _INT64_MAX // scale).any():
        return None  # seconds past the year 2262: Python ints, the row-by-row way
    ts = epoch * scale
    if len(ts) > 1 and not (np.diff(ts) > 0).all():
        return None
    return ts, arr


def find_gaps(klines: Klines, interval_ns: int | None = None) -> list[Gap]:
    """Return every break in the bar grid: each step between open times other than the interval.

    ``interval_ns`` defaults to the file's most common step. A longer step reports the whole bars
    that are missing; a shorter one (the grid shifts back into alignment) reports 0 missing.
    Nothing is filled in: gaps stay gaps. The BTCUSDT 1h data has 29 breaks: 28 runs of
    missing bars and one where a 43-bar stretch opening at hh:28:14 re-aligns to the hour.
    """
    interval = interval_ns or klines.interval_ns
    if interval <= 0 or len(klines) < 2:
        return []
    steps = np.diff(klines.ts)
    gaps: list[Gap] = []
    for i in np.nonzero(steps != interval)[0]:
        prev, nxt = int(klines.ts[i]), int(klines.ts[i + 1])
        missing = max(0, (nxt - prev - 1) // interval)
        gaps.append(Gap(prev=prev, next=nxt, interval=interval, missing=missing))
    return gaps


def write_klines_csv(path: Path, klines: Klines) -> None:
    """Write ``klines`` in the documented format with epoch-millisecond open times."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        columns = zip(
            (klines.ts // 1_000_000).tolist(),
            klines.open.tolist(),
            klines.high.tolist(),
            klines.low.tolist(),
            klines.close.tolist(),
            klines.volume.tolist(),
            strict=True,
        )
        for t, o, h, lo, c, v in columns:
            fh.write(f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}\n")

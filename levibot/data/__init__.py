"""Real market data on disk: fetch the BTCUSDT 1h klines, load OHLCV CSVs, find their gaps.

``ensure_btcusdt()`` returns the path of a clean CSV (downloaded once from the package index,
hash-checked, cached). ``load_klines(path)`` reads any OHLCV CSV in the documented format
(``timestamp,open,high,low,close,volume``; see ``levibot.data._klines``) into numpy arrays, and
``find_gaps`` reports the breaks in its bar grid without ever inventing bars.
"""

from __future__ import annotations

from levibot.data._fetch import DataFetchError, default_data_dir, ensure_btcusdt
from levibot.data._klines import (
    COLUMNS,
    Gap,
    Klines,
    KlinesError,
    Reject,
    find_gaps,
    infer_symbol,
    iso,
    load_klines,
    parse_timestamp,
    write_klines_csv,
)

__all__ = [
    "COLUMNS",
    "DataFetchError",
    "Gap",
    "Klines",
    "KlinesError",
    "Reject",
    "default_data_dir",
    "ensure_btcusdt",
    "find_gaps",
    "infer_symbol",
    "iso",
    "load_klines",
    "parse_timestamp",
    "write_klines_csv",
]

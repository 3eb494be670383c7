"""``levibot features INPUT.csv -o OUTPUT.csv``: the feature matrix of any OHLCV file.

Input: a CSV with ``timestamp,open,high,low,close,volume`` (the format of ``levibot data
fetch``; see ``levibot.data``); rows the loader refuses (malformed, non-finite, negative,
inconsistent, duplicate, out of order) are dropped and counted on stderr. Output: ``timestamp``
(bar open time, epoch milliseconds UTC) and one column per feature in schema order, an empty
cell where a feature is still warming up, floats written so they read back bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from levibot.errors import LevibotError


def register(sub: Any) -> None:
    """Register ``levibot features``."""
    p = sub.add_parser(
        "features",
        help="write the feature matrix of an OHLCV CSV",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input", metavar="INPUT.csv", help="OHLCV CSV (timestamp,open,high,low,close,volume)"
    )
    p.add_argument("-o", "--output", metavar="OUTPUT.csv", required=True,
                   help="where to write the features ('-' for stdout)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the bars, compute every feature, write the CSV; report what was dropped."""
    from levibot.data import load_klines
    from levibot.features import SCHEMA, compute_batch
    from levibot.features.io import write_features, write_features_csv

    klines = load_klines(args.input)
    values = compute_batch(
        klines.open, klines.high, klines.low, klines.close, klines.volume, klines.ts
    )
    ts_ms = klines.ts // 1_000_000
    if args.output == "-":
        rows = write_features(sys.stdout, ts_ms, values)
    else:
        try:
            rows = write_features_csv(args.output, ts_ms, values)
        except OSError as exc:
            raise LevibotError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(klines.dropped.items()))
    print(
        f"levibot features: {rows} rows x {len(SCHEMA.names)} features "
        f"(schema v{SCHEMA.version} {SCHEMA.hash}, defined from row {SCHEMA.warmup}) "
        f"-> {args.output}" + (f"; dropped {dropped}" if dropped else ""),
        file=sys.stderr,
    )
    return 0

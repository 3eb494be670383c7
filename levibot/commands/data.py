"""``levibot data``: fetch the real BTCUSDT data, report the gaps of any kline CSV."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from levibot.data import Klines, ensure_btcusdt, find_gaps, iso, load_klines
from levibot.marketdata.timeframe import format_timeframe, parse_timeframe


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``data fetch`` and ``data gaps``."""
    parser = sub.add_parser("data", help="fetch and inspect market data")
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)

    fetch = data_sub.add_parser(
        "fetch",
        help="download the real Binance BTCUSDT 1h klines (once) and report their gaps",
        description=(
            "Download gapless-crypto-data==5.0.3 from the package index, check its sha256, and "
            "write a clean timestamp,open,high,low,close,volume CSV (timestamp = bar open time "
            "in epoch ms, UTC) into the data directory. Cached: a second run uses no network."
        ),
    )
    fetch.add_argument("--data-dir", type=Path, default=None, help="default: var/data")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.add_argument("--json", action="store_true", help="print the report as JSON")
    fetch.set_defaults(func=_fetch)

    gaps = data_sub.add_parser("gaps", help="report the gaps and bad rows of a kline CSV")
    gaps.add_argument("path", type=Path)
    gaps.add_argument("--interval", default="", help="bar interval (1h); default: inferred")
    gaps.add_argument("--json", action="store_true", help="print the report as JSON")
    gaps.set_defaults(func=_gaps)


def _fetch(args: argparse.Namespace) -> int:
    path = ensure_btcusdt(args.data_dir, progress=not args.no_progress and sys.stderr.isatty())
    _report(path, load_klines(path), 0, args.json)
    return 0


def _gaps(args: argparse.Namespace) -> int:
    interval = parse_timeframe(args.interval) if args.interval else 0
    _report(args.path, load_klines(args.path), interval, args.json)
    return 0


def _report(path: Path, k: Klines, interval: int, as_json: bool) -> None:
    interval = interval or k.interval_ns
    gaps = find_gaps(k, interval) if interval else []
    missing = sum(g.missing for g in gaps)
    if as_json:
        doc = {
            "path": str(path),
            "symbol": k.symbol,
            "rows": len(k),
            "timeframe": format_timeframe(interval) if interval else "",
            "first": iso(int(k.ts[0])) if len(k) else None,
            "last": iso(int(k.ts[-1])) if len(k) else None,
            "dropped": k.dropped,
            "rejects": [{"line": r.line, "reason": r.reason} for r in k.rejects],
            "gaps": [
                {"prev": iso(g.prev), "next": iso(g.next), "missing": g.missing, "kind": g.kind}
                for g in gaps
            ],
            "missing_bars": missing,
        }
        print(json.dumps(doc, indent=2))
        return
    print(path)
    if not len(k):
        print("  no bars")
        return
    tf = format_timeframe(interval) if interval else "?"
    print(f"  {k.symbol} {tf}: {len(k):,} bars, {iso(int(k.ts[0]))} → {iso(int(k.ts[-1]))} UTC")
    if k.dropped:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(k.dropped.items()))
        print(f"  dropped rows: {k.n_dropped} ({reasons})")
        for r in k.rejects[:20]:
            print(f"    line {r.line}: {r.reason}")
    misaligned = sum(1 for g in gaps if g.kind == "misaligned")
    print(
        f"  gaps: {len(gaps)} ({len(gaps) - misaligned} with {missing} missing bars, "
        f"{misaligned} misaligned); gaps stay gaps, no bar is invented"
    )
    for g in gaps:
        print(f"    {g.describe()}")

"""``levibot replay``: run a journal or a data file through the same actors, record the orders.

The source is either a store journal (``--journal DIR``: its market data, ``Tick``/``Quote``/
``Bar``, re-published in journal order) or a kline/trades CSV (``--data CSV``, through the real
feed's replay source). The other actors of ``--groups`` (default ``ingest,scoring,execution``;
the ``feed`` is replaced by the replay source, ``store`` and the sidecars are left out) run
with their sections of ``--config``, under the replay clock: event time, lossless mailboxes,
one event handled to the end before the next. Risk and order do not persist their state, so
the same input gives the same orders and fills, bit for bit, run after run.

Writes ``DIR/orders.jsonl`` (``OrderIntent`` and ``OrderDenied``), ``DIR/fills.jsonl``
(``Fill``), ``DIR/closed.jsonl`` (``OrderClosed``) and ``DIR/summary.json``: one JSON object
a line, each with its ``type`` tag, in the order they were produced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from levibot.commands.run import add_common, config_path


def register(sub: Any) -> None:
    """Register ``levibot replay``."""
    p = sub.add_parser(
        "replay",
        help="replay a journal or a data file through the actors; write orders and fills",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--journal", metavar="PATH", help="store journal directory or segment")
    src.add_argument("--data", metavar="CSV", help="kline or trades CSV")
    p.add_argument(
        "--groups",
        default="ingest,scoring,execution",
        help="comma-separated groups to run (default: ingest,scoring,execution)",
    )
    p.add_argument("--symbol", default="", help="symbol of a --data file (default: inferred)")
    p.add_argument("--out", metavar="DIR", default="var/replay", help="output directory")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Replay, write the outputs, print a summary."""
    import anyio

    from levibot.backtest import replay_settings, run_node
    from levibot.logging import configure

    configure(args.log_level, "auto")
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    settings = replay_settings(
        journal=args.journal or "", data=args.data or "", groups=groups,
        config=config_path(args), symbol=args.symbol,
    )  # fmt: skip
    rec = anyio.run(run_node, settings, args.journal or args.data,
                    backend_options={"use_uvloop": True})  # fmt: skip
    summary = write_replay(Path(args.out), rec.recorder, wall_s=rec.wall_s)
    print(json.dumps(summary, indent=2))
    return 0


def write_replay(out: Path, recorder: Any, *, wall_s: float = 0.0) -> dict[str, Any]:
    """Write the replay's orders, fills and closes as JSON lines; return the summary."""
    import msgspec

    from levibot.messages import Bar, Fill, OrderClosed, OrderDenied, OrderIntent, PortfolioSnapshot

    out.mkdir(parents=True, exist_ok=True)
    enc = msgspec.json.Encoder()
    files = {
        "orders.jsonl": (OrderIntent, OrderDenied),
        "fills.jsonl": (Fill,),
        "closed.jsonl": (OrderClosed,),
    }
    counts: dict[str, int] = {}
    for name, types in files.items():
        msgs = [m for m in recorder.messages if isinstance(m, types)]
        counts[name] = len(msgs)
        with (out / name).open("wb") as fh:
            for m in msgs:
                fh.write(enc.encode(m) + b"\n")
    snaps = recorder.of_type(PortfolioSnapshot)
    bars = len(recorder.of_type(Bar))
    summary: dict[str, Any] = {
        "bars": bars,
        "files": counts,
        "final_portfolio": msgspec.to_builtins(snaps[-1]) if snaps else None,
        "wall_s": round(wall_s, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

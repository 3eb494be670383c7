"""Live-mode chaos over many seeded runs: kill -9 and network faults, a table of what was lost.

Each run is ``tests/e2e/live_chaos.py``'s split pipeline (ingest | scoring | execution, live
clock, market data on core NATS, each process behind its own TCP fault proxy) with a seeded
random plan of ``--kills`` kill -9 and ``--net`` network faults (latency, stall, one-way stall,
cut) at random bars on random processes. Every invariant is checked after every run; the table
shows the faults, the orders and fills, the bars published and received, and the bar loss
inside and outside the fault windows next to what the nodes' drop counters counted.

    python -m bench.chaos_live [--seeds 1-30] [--kills 2] [--net 1] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.e2e import live_chaos as lc

COLUMNS = ("seed", "intents", "fills", "rejected", "bars_pub", "bars_recv", "lost_in_fault",
           "lost_outside", "counted", "seconds", "violations", "faults")  # fmt: skip


def main() -> int:
    """Play the seeds, print one row per run and a summary; exit 1 if any invariant broke."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-30")
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--net", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write rows as JSON lines here")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (logs)")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    broken: list[tuple[int, list[str]]] = []
    faults: list[lc.Fault] = []
    print(" | ".join(COLUMNS), flush=True)
    started = time.monotonic()
    for seed in lc.parse_seeds(args.seeds):
        plan = lc.random_plan(seed, kills=args.kills, net=args.net)
        faults += plan.faults
        tmp = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
        try:
            out = lc.run(tmp, plan)
            rep = lc.check(out)
            row = lc.summary(out, rep)
            if rep.violations:
                broken.append((seed, rep.violations))
        except Exception as exc:  # a run that could not finish is reported, not hidden
            row = {"seed": seed, "faults": " ".join(map(str, plan.faults)), "error": repr(exc)}
            broken.append((seed, [repr(exc)]))
        rows.append(row)
        print(" | ".join(str(row.get(c, "")) for c in COLUMNS), row.get("error", ""), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        if not args.keep and not rep_failed(row):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"  kept {tmp}", flush=True)
    done = [r for r in rows if "error" not in r]
    kinds = Counter(f.kind for f in faults)
    targets = Counter(f.target for f in faults)
    print(f"\n{len(rows)} runs in {time.monotonic() - started:.0f} s; faults {dict(kinds)} on "
          f"{dict(targets)}")  # fmt: skip
    print(
        f"orders {sum(r['intents'] for r in done)}, fills {sum(r['fills'] for r in done)}; bars "
        f"published {sum(r['bars_pub'] for r in done)}, lost in fault windows "
        f"{sum(r['lost_in_fault'] for r in done)}, lost outside "
        f"{sum(r['lost_outside'] for r in done)} (counted {sum(r['counted'] for r in done):g})"
    )
    for seed, violations in broken:
        print(f"seed {seed}: {violations[:5]}")
    return 1 if broken else 0


def rep_failed(row: dict[str, Any]) -> bool:
    """True when a run broke an invariant or did not finish (its logs are worth keeping)."""
    return bool(row.get("violations")) or "error" in row


if __name__ == "__main__":
    raise SystemExit(main())

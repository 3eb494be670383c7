"""Event-loop stalls under the pipeline with persistence on: how long the loop could not run.

One process on the in-memory bus, as ``levibot run`` with every group: the pipeline bench's
source (``pbars``: the real BTCUSDT 1h klines as 1 s bars over ``--symbols`` symbols, a
warm-up, then one step per rate of ``--rates``), feature, scoring (the rule strategy
``ema_cross`` on ``ret_1`` against ``ret_3``: it flips every few bars, so orders are frequent,
and there is no model to train), risk and order with their state files written and fsynced
after every change (the production default), and the store's journal (``fsync = "batch"``).
Unlike ``bench.bench_pipeline``, nothing is turned off: the point is the disk.

A probe task on the same loop sleeps 1 ms and records how late it wakes; the overshoot is how
long something else held the loop (every actor of the process waited that long). Reported: the
overshoot's max, p99.9, p99 and median during the measured steps (and over the whole run), the
same for one second of an idle loop before the node starts (the timer's and the machine's
floor), the fills and the state files' size.

``--no-persist`` is the control: the same run with no state file and no journal, so what is
left is the pipeline's own work and the machine's noise. State and journal go under ``--dir``
(default: a fresh directory under ``./var``): a real disk, since tmpfs would hide what fsync
costs.

    python -m bench.bench_loop_stall [--symbols 8] [--rates 250 500] [--step-s 5] [--json OUT]

Figures (2026-12-06, the defaults, a 2-core VM shared with other work, load average ~9, ext4
on a virtio disk; overshoot of the 1 ms probe during the measured steps, ms):

    inline saves (before)    max 1,380-4,738   p99 1,363-4,634   probe ran 7-14 times in 10 s;
                             the source fell behind (749-1,884 of 2,500 bars); whole run up to 20 s
    worker-thread saves      max 41-300        p99 12.9-18.2     all bars, 1,172-1,372 fills
    no persistence (control) max 18-130        p99 5.6-7.0

What remains above the control is the state's encoding on the loop (the order actor's
``portfolio.json`` grows with its equity curve: ~300 kB, ~1.5 ms to encode per fill here);
with ``fsync = false`` the figures are the same.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from levibot.logging import configure
from levibot.runtime.node import Node
from levibot.settings import load_settings

CASH = 1e12  # no order refused for cash: every signal that changes side trades
GROUPS = {"all": ["pbars", "feature", "scoring", "risk", "order", "store"]}
Samples = list[tuple[int, int]]  # (wall ns at wake-up, overshoot ns)


async def probe(samples: Samples, period_s: float = 0.001) -> None:
    """Sleep ``period_s`` forever, recording how late each wake-up is."""
    period_ns = int(period_s * 1e9)
    perf = time.perf_counter_ns
    while True:
        t0 = perf()
        await anyio.sleep(period_s)
        samples.append((time.time_ns(), perf() - t0 - period_ns))


def stats(overshoot_ns: np.ndarray) -> dict[str, float]:
    """Return the overshoot's summary in milliseconds."""
    if len(overshoot_ns) == 0:
        return {"n": 0}
    ms = overshoot_ns / 1e6
    q = np.percentile(ms, [50, 99, 99.9])
    return {
        "n": len(ms),
        "max_ms": round(float(ms.max()), 3),
        "p999_ms": round(float(q[2]), 3),
        "p99_ms": round(float(q[1]), 3),
        "p50_ms": round(float(q[0]), 3),
    }


def sections(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Return the node's configuration: every actor on, persistence at its defaults."""
    return {
        "node": {"plugins": ["bench.pipeline_actors"], "groups": list(GROUPS),
                 "http_port": -1, "stop_when_sources_done": True},
        "groups": GROUPS,
        "log": {"level": "warning"},
        "storage": {"data_dir": str(data_dir)},
        "pbars": {"symbols": args.symbols, "warmup_bars": args.warmup_bars,
                  "warmup_rate": 2_000.0, "settle_s": 1.0, "rates": tuple(args.rates),
                  "step_s": args.step_s, "pause_s": 1.0},
        "scoring": {"strategies": ["ema_cross"], "ema_cross": {"fast": 2, "slow": 3}},
        "risk": {"preset": "off", "initial_equity": CASH, "persist": not args.no_persist},
        "order": {"cash": CASH, "fill": "close", "persist": not args.no_persist},
        "store": {"journal": not args.no_persist},
    }  # fmt: skip


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Run the node with the probe beside it; return the stall figures."""
    idle: Samples = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe, idle)
        await anyio.sleep(1.0)
        tg.cancel_scope.cancel()

    settings = load_settings(None, environ={}, overrides=sections(args, data_dir))
    node = Node(settings)
    busy: Samples = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe, busy)
        code = await node.run(handle_signals=False)
        tg.cancel_scope.cancel()
    if code != 0:
        raise RuntimeError(f"the benchmark node exited {code}")
    steps = node.actors["pbars"].steps  # type: ignore[attr-defined]
    arr = np.array(busy, dtype=np.int64).reshape(-1, 2)
    per_step = []
    for step in steps:
        sel = (arr[:, 0] >= step["start_ns"]) & (arr[:, 0] <= step["end_ns"])
        per_step.append({"rate": step["rate"], "bars": step["bars"], **stats(arr[sel, 1])})
    measured = np.concatenate(
        [arr[(arr[:, 0] >= s["start_ns"]) & (arr[:, 0] <= s["end_ns"]), 1] for s in steps]
    )
    state = data_dir / "state"
    files = {p.name: p.stat().st_size for p in sorted(state.glob("*.json"))}
    order = node.actors["order"]
    return {
        "idle": stats(np.array([o for _, o in idle], dtype=np.int64)),
        "steps": per_step,
        "measured": stats(measured),
        "whole_run": stats(arr[:, 1]),
        "fills": int(order.portfolio.state.fills),  # type: ignore[attr-defined]
        "state_files_bytes": files,
        "data_dir": str(data_dir),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print (and optionally write) the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--symbols", type=int, default=8)
    ap.add_argument("--warmup-bars", type=int, default=240)  # features need 200
    ap.add_argument("--rates", type=float, nargs="+", default=[250.0, 500.0])
    ap.add_argument("--step-s", type=float, default=5.0)
    ap.add_argument("--no-persist", action="store_true", help="control: no state files, no journal")
    ap.add_argument("--dir", type=Path, default=None, help="data dir (default: under ./var)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    configure("warning")
    if args.dir is None:
        Path("var").mkdir(exist_ok=True)
        args.dir = Path(tempfile.mkdtemp(prefix="loopstall-", dir="var"))
    result = anyio.run(run, args, args.dir, backend_options={"use_uvloop": True})
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

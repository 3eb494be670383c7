"""``levibot bench``: the end-to-end latency and throughput benchmark (``bench/bench_pipeline.py``).

It runs the benchmark as a child process, ``python -m bench.bench_pipeline``, from the source
checkout that holds this package (``bench/`` next to ``levibot/``): ``levibot`` never imports
``bench``, and an installed package without a checkout says so rather than guessing. Results:
``bench/results/pipeline.json``, PNG plots beside it, and tables on the terminal: per
configuration (single process, NATS mirror, split into processes) against a bare pipeline, then
the ratios between them, the raw-NATS hop and the idle strategies, all from the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from levibot.errors import LevibotError

CONFIGS = ("inproc", "mirror", "procs")


def checkout_root(package: Path | None = None) -> Path:
    """Return the source checkout holding ``bench/`` beside the ``levibot`` package."""
    package = package or Path(__file__).resolve().parent.parent
    root = package.parent
    if not (root / "bench" / "bench_pipeline.py").is_file():
        raise LevibotError(
            f"no bench/bench_pipeline.py next to the levibot package (looked in {root}); "
            "`levibot bench` runs from a source checkout"
        )
    return root


def register(sub: Any) -> None:
    """Register ``levibot bench``."""
    p = sub.add_parser(
        "bench",
        help="measure tick-to-order latency and throughput against a bare pipeline",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short steps and rounds (a few minutes)")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=None,
                   help="configurations to measure (default: all three)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", default=None, help="results folder (bench/results)")
    p.add_argument("--repeats", type=int, default=None, help="rate ladders per configuration")
    p.add_argument("--rates", type=float, nargs="+", default=None, help="bars/s, one step each")
    p.add_argument("--nats", default=None, help="NATS URL for the mirror and split runs")
    p.add_argument("--trees", type=int, default=None, help="trees of the bench model (200)")
    p.add_argument("--hop-count", type=int, default=None,
                   help="messages of the raw-NATS vs levibot one-hop run (0: none)")  # fmt: skip
    p.add_argument("--idle-rate", type=float, default=None,
                   help="bars/s of the [node] idle sleep/spin comparison (0: none)")  # fmt: skip
    p.set_defaults(func=run)


def command(args: argparse.Namespace) -> list[str]:
    """Return the child command line for ``args``."""
    cmd = [sys.executable, "-m", "bench.bench_pipeline"]
    if args.quick:
        cmd.append("--quick")
    if args.configs:
        cmd += ["--configs", *args.configs]
    if args.out:
        cmd += ["--out", str(Path(args.out).resolve())]
    if args.repeats is not None:
        cmd += ["--repeats", str(args.repeats)]
    if args.rates:
        cmd += ["--rates", *(str(r) for r in args.rates)]
    if args.nats:
        cmd += ["--nats", args.nats]
    if args.trees is not None:
        cmd += ["--trees", str(args.trees)]
    if getattr(args, "hop_count", None) is not None:
        cmd += ["--hop-count", str(args.hop_count)]
    if getattr(args, "idle_rate", None) is not None:
        cmd += ["--idle-rate", str(args.idle_rate)]
    return cmd


def run(args: argparse.Namespace) -> int:
    """Run the benchmark in the checkout and return its exit status."""
    root = checkout_root()
    return subprocess.call(command(args), cwd=root)

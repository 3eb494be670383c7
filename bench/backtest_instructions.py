"""Instructions per backtest bar, by callgrind: a figure the machine's load does not move.

Wall time on a shared VM moves by half from one evening to the next; the instructions a bar
costs do not. Callgrind counts every instruction of two backtests (EMA 12/26 cross on the real
BTCUSDT 1h history, next-open fills), one of ``--bars`` bars and one of twice as many, both with
``PYTHONHASHSEED=0``; the difference divided by ``--bars`` is the cost of one bar, with the
start-up (imports, the data file, the node) cancelled out. The two runs go side by side.

    python -m bench.backtest_instructions [--bars 10000] [--tree PATH ...]

Each ``--tree`` is a source tree to measure (default: this checkout); to compare with an older
commit, ``git worktree add /tmp/base REV`` and pass ``--tree /tmp/base --tree .``. Needs
valgrind (Debian: ``apt-get install valgrind``); each tree takes a minute or four.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: What each measured process runs: a backtest of ``limit`` bars, nothing else.
_RUN = """
import sys, anyio
from levibot.backtest import BacktestSpec, run_backtest
from levibot.logging import configure
configure("warning", "console")
spec = BacktestSpec(strategy="ema_cross", fill="next_open", limit=int(sys.argv[1]))
anyio.run(run_backtest, spec, backend_options={"use_uvloop": True})
"""


def instructions(tree: Path, bars: int, tmp: Path) -> int:
    """Return the instructions per bar of ``tree``'s backtest (2·bars minus bars runs)."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "PYTHONHASHSEED": "0"}
    procs = []
    for n in (bars, 2 * bars):
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.{n}.out",
               sys.executable, "-c", _RUN, str(n)]  # fmt: skip
        # In ``tmp``: ``python -c`` puts the working directory first on the path, which would
        # import the checkout this runs from rather than ``tree``.
        procs.append(subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    counts = []
    for proc in procs:
        _, err = proc.communicate()
        found = re.search(r"Collected : (\d+)", err)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"callgrind failed on {tree} (exit {proc.returncode}):\n{err[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) // bars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=10_000)
    ap.add_argument("--tree", type=Path, action="append", help="source tree (repeatable)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    from levibot.data import ensure_btcusdt

    ensure_btcusdt(None, False)  # fetched once, outside the measured runs
    results = {}
    for tree in trees:
        # A first, unmeasured run writes the tree's bytecode caches (if it may), so that
        # neither measured run compiles what the other does not.
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        with tempfile.TemporaryDirectory(prefix="lbcg") as tmp:
            subprocess.run([sys.executable, "-c", _RUN, "10"], check=True, capture_output=True,
                           cwd=tmp, env=env)  # fmt: skip
            results[tree] = instructions(tree, args.bars, Path(tmp))
        print(f"{tree}: {results[tree]:,} instructions per bar", flush=True)
    if len(trees) > 1:
        first = results[trees[0]]
        for tree in trees[1:]:
            print(f"{trees[0]} ÷ {tree}: {first / results[tree]:.2f}×")


if __name__ == "__main__":
    main()

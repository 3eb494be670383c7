"""What the terminal status line costs: a replay through the whole pipeline with and without it.

    .venv/bin/python -m bench.bench_statusline [--bars 3000] [--repeats 5]

``levibot run`` on a pseudo-terminal replays ``--bars`` real BTCUSDT bars as fast as it can
through feed → feature → scoring (ema_cross) → risk → order, once with the status line and once
with ``--no-status`` (the baseline, same run, interleaved). The figure is the replay's own span,
from the ``node.ready`` log line to ``node.sources_done`` (start-up is not in it). Medians of
``--repeats`` runs; writes ``bench/results/statusline.json``.

Also, per log line written while the line is shown (a console-rendered structlog line, to
/dev/null): straight to the file (baseline), through ``FootedTerminal``, and through rich's
``Live`` with its stdout/stderr redirection (the design it replaced). Medians of 5 × 2,000 lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\S* +\[\S*info\S* *\] +\S*"


def span(screen: str) -> float:
    """Seconds from node.ready to node.sources_done in a run's console log."""
    times = []
    for event in ("node.ready", "node.sources_done"):
        found = re.search(STAMP + re.escape(event), screen)
        if found is None:
            raise RuntimeError(f"no {event} in the run's output: {screen[-2000:]}")
        times.append(datetime.fromisoformat(found[1]))
    return (times[1] - times[0]).total_seconds()


LOG_LINE = (
    "\x1b[2m2026-12-06T08:54:10.326584Z\x1b[0m [\x1b[1;32minfo     \x1b[0m] \x1b[1morder.exit"
    "                    \x1b[0m \x1b[36mactor\x1b[0m=\x1b[35morder\x1b[0m \x1b[36mprice\x1b[0m="
    "\x1b[35m5590.675217787973\x1b[0m \x1b[36mreason\x1b[0m=\x1b[35mstop_loss\x1b[0m\n"
)


def per_log_line(lines: int = 2000, repeats: int = 5) -> dict[str, float]:
    """Microseconds per log line: direct, FootedTerminal, rich Live's redirection."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from levibot.statusline import FootedTerminal

    footer = Text("● replay  1,256 msg/s  signals 13 (11.4/s)  equity 10,076.68  last BTCUSDT")
    out: dict[str, list[float]] = {"direct": [], "FootedTerminal": [], "rich Live": []}
    with open(os.devnull, "w") as sink:
        console = Console(file=sink, force_terminal=True, width=200)
        with console.capture() as captured:
            console.print(footer, end="")
        footed = FootedTerminal(sink)
        footed.draw(captured.get())
        for _ in range(repeats):
            for name in out:
                saved = sys.stderr
                live = Live(footer, console=console, auto_refresh=False, redirect_stderr=True)
                if name == "rich Live":
                    live.start()
                stream = {"direct": sink, "FootedTerminal": footed}.get(name, sys.stderr)
                t0 = time.perf_counter()
                for _ in range(lines):
                    stream.write(LOG_LINE)
                    stream.flush()
                out[name].append((time.perf_counter() - t0) / lines * 1e6)
                if name == "rich Live":
                    live.stop()
                sys.stderr = saved
    return {name: statistics.median(v) for name, v in out.items()}


def main(args: argparse.Namespace) -> dict[str, Any]:
    from tests.e2e.test_statusline_tty import ANSI, config, run_on_a_terminal

    runs: dict[str, list[float]] = {"status line": [], "--no-status": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp))
        text = cfg.read_text()
        text = re.sub(r"limit = \d+", f"limit = {args.bars}", text)
        cfg.write_text(re.sub(r"speed = [\d.e+]+", "speed = 0.0", text))  # as fast as it goes
        for _ in range(args.repeats):
            for name, extra in (("status line", ()), ("--no-status", ("--no-status",))):
                code, out = run_on_a_terminal(cfg, *extra, timeout=300)
                if code != 0:
                    raise RuntimeError(f"{name}: exit {code}: {out[-2000:]}")
                runs[name].append(span(ANSI.sub("", out)))
    with_line, baseline = (statistics.median(runs[k]) for k in ("status line", "--no-status"))
    return {
        "us_per_log_line": per_log_line(),
        "bars": args.bars,
        "repeats": args.repeats,
        "median_s": {"status line": with_line, "--no-status": baseline},
        "bars_per_s": {"status line": args.bars / with_line, "--no-status": args.bars / baseline},
        "ratio": with_line / baseline,
        "runs_s": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    result = main(parser.parse_args())
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "statusline.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, seconds in result["median_s"].items():
        print(f"{name:>12}: {seconds:.3f} s  ({result['bars_per_s'][name]:,.0f} bars/s)")
    print(f"       ratio: {result['ratio']:.3f} (status line / --no-status, medians)")
    for name, us in result["us_per_log_line"].items():
        print(f"per log line, {name}: {us:.1f} µs")

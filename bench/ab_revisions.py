"""Two revisions of levibot against each other on the engine, alternated, in one session.

On a shared VM, two runs taken apart drift by more than most changes are worth. This runs
revision A and revision B in turn (A, B, then B, A, ...), each measurement in its own process
whose ``PYTHONPATH`` points at a worktree of that revision's ``levibot`` (the bench code is this
checkout's for both), and reports medians and B ÷ A:

  mirror  the engine in one process with the NATS mirror on (no remote consumer), CPU µs/bar at
          ``--mirror-rate``; once per round with no NATS at all, for "mirror ÷ off"
  split   ``levibot bench``'s ingest | scoring | execution processes at ``--rate`` bars/s over
          ``--symbols`` symbols: CPU µs/bar, e2e p50 and p99

What one comparison resolves here: about ±5% with 6 repeats (2026-12-07: a change that should
have been neutral measured ×1.05 on both, twice, and was reverted).

    python -m bench.ab_revisions A_REV [B_REV] [--repeats 6] [--rate 1000] [--mirror-rate 1000]

B defaults to this working tree, uncommitted changes included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def _sections(args: argparse.Namespace, rate: float) -> dict[str, Any]:
    from bench import pipeline_model as pm
    from bench.bench_pipeline import engine_sections

    # What engine_sections reads (bench_pipeline's --quick values, one step).
    args.rates, args.pause_s, args.warmup_bars, args.warmup_rate, args.settle_s = (
        [rate], 0.5, 210, 2000.0, 0.5,
    )  # fmt: skip
    klines = pm.load_real_klines()
    model_id = pm.ensure_model(trees=args.trees)
    threshold = pm.median_probability(pm.REGISTRY, model_id, klines)
    return engine_sections(args, model_id, threshold)


def measure(kind: str, args: argparse.Namespace) -> dict[str, float]:
    """One measurement in this process (``kind``: mirror, off or split); the revision is
    whichever ``levibot`` this process imports."""
    from bench.bench_core_link import _split
    from bench.pipeline_engine import run_inproc
    from bench.pipeline_stats import summarize
    from levibot.logging import configure

    configure("warning")
    if kind == "split":
        return _split(_sections(args, args.rate), args.nats)
    sections = _sections(args, args.mirror_rate)
    if kind == "mirror":
        ns = f"ab{uuid.uuid4().hex[:8]}"
        sections["nats"] = {"url": args.nats, "namespace": ns, "stream": ns.upper()}
    records, steps, drops, cpu, error = run_inproc(sections, "")
    if error or not steps:
        raise RuntimeError(f"the engine failed: {error or 'no step'}")
    return {"cpu_us_per_bar": float(summarize(records, steps, drops, cpu)[0]["cpu_us_per_bar"])}


def _shim(base: Path, levibot: Path) -> Path:
    """A directory whose ``levibot`` is ``levibot`` and whose ``bench`` is this checkout's."""
    base.mkdir(parents=True)
    (base / "levibot").symlink_to(levibot)
    (base / "bench").symlink_to(ROOT / "bench")
    return base


def _run(shim: Path, kind: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.ab_revisions", "--measure", kind,
           "--rate", str(args.rate), "--mirror-rate", str(args.mirror_rate),
           "--symbols", str(args.symbols), "--step-s", str(args.step_s),
           "--nats", args.nats]  # fmt: skip
    # Run from the shim: ``-m`` puts the working directory first on the path, before
    # PYTHONPATH, so from this checkout it would import this checkout's levibot on both sides.
    env = {**os.environ, "PYTHONPATH": str(shim)}
    out = subprocess.run(cmd, env=env, cwd=shim, capture_output=True, text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} under {shim} failed: {out.stderr[-2000:]}")
    result = dict(json.loads(lines[-1]))
    imported = Path(result.pop("levibot")).resolve()
    if not imported.is_relative_to((shim / "levibot").resolve()):
        raise RuntimeError(f"{kind} under {shim} imported the wrong levibot: {imported}")
    return result


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the two revisions ``--repeats`` times; return medians and B ÷ A."""
    tmp = Path(tempfile.mkdtemp(prefix="lbab"))
    trees = []
    try:
        shims = {}
        for side, rev in (("A", args.a), ("B", args.b)):
            if rev:
                tree = tmp / f"tree-{side}"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                                str(tree), rev], check=True)  # fmt: skip
                trees.append(tree)
            else:
                tree = ROOT
            shims[side] = _shim(tmp / f"shim-{side}", tree / "levibot")
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            kind: {"A": [], "B": [], "off": []} for kind in ("mirror", "split")
        }
        for r in range(args.repeats):
            order = ("B", "A") if r % 2 else ("A", "B")
            for kind in ("mirror", "split"):
                for side in order:
                    runs[kind][side].append(_run(shims[side], kind, args))
            runs["mirror"]["off"].append(_run(shims["B"], "off", args))
            print(f"  round {r + 1}: "
                  + " ".join(f"{k}/{s}={v[-1]['cpu_us_per_bar']:,.0f}"
                             for k, sides in runs.items() for s, v in sides.items() if v),
                  flush=True)  # fmt: skip
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)  # fmt: skip
    med = {
        kind: {side: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
               for side, rs in sides.items() if rs}
        for kind, sides in runs.items()
    }  # fmt: skip
    return {
        "a": args.a, "b": args.b or "working tree", "repeats": args.repeats, "medians": med,
        "b_vs_a": {kind: {k: m["B"][k] / m["A"][k] for k in m["A"]} for kind, m in med.items()},
        "mirror_vs_off": {s: med["mirror"][s]["cpu_us_per_bar"]
                          / med["mirror"]["off"]["cpu_us_per_bar"] for s in ("A", "B")},
        "runs": runs, "loadavg": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    from levibot.testenv import NATS_URL

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", nargs="?", default="", help="revision A (a commit, a branch)")
    p.add_argument("b", nargs="?", default="", help="revision B (default: this working tree)")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--rate", type=float, default=1000.0, help="bars/s of the split")
    p.add_argument("--mirror-rate", type=float, default=1000.0, help="bars/s of the mirror")
    p.add_argument("--symbols", type=int, default=8)
    p.add_argument("--step-s", type=float, default=6.0)
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--measure", choices=("mirror", "off", "split"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS / "ab_revisions.json")
    args = p.parse_args()
    if args.measure:
        import levibot

        print(json.dumps({**measure(args.measure, args), "levibot": levibot.__file__}))
        return
    if not args.a:
        p.error("give revision A")
    result = compare(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for kind, ratios in result["b_vs_a"].items():
        print(f"{kind:7} B ÷ A: " + "  ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print("mirror ÷ off: " + "  ".join(f"{s} {v:.3f}" for s, v in result["mirror_vs_off"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Tracing's cost: CPU per message with ``[tracing]`` off, against the code before tracing
existed (the baseline, measured in the same run), and on.

Workloads, one process each, in process (no NATS), on uvloop:
  chain     counter → square → sink (tests.pipeline): the bus at its fastest, so that a
            per-message cost shows the most; CPU per source message
  pipeline  the real actors on real bars in replay: feed → feature → scoring (ema_cross) →
            risk → order; CPU per bar

Configurations:
  before    the same workload run against a tree of the commit before tracing (``--before``,
            e.g. ``git archive 8eb0ec3^ | tar -x -C /tmp/before``), where nothing about tracing
            exists; skipped without ``--before``
  off       this tree, ``[tracing]`` left at its default (off)
  on        tracing on, every span recorded and exported (``file`` exporter: a batch
            processor writing JSON lines from its thread, whose CPU counts too)
  on_unsampled  tracing on with ``sample_ratio = 0``: contexts propagate, nothing is recorded

Each run is a fresh process; the CPU time (process_time: every thread) of ``Node.run`` only.
Configurations alternate within each repeat; the figure is the median over ``--repeats``.

``--bus`` instead runs the bus benchmark (``bench.bench_bus --quick``: in process, with the NATS
mirror, and across processes) alternately in ``--before`` and in this tree, tracing off in
both, and compares their ratios to the bare-queue baseline each run measures itself.

    python -m bench.bench_tracing [--repeats 7] [--before /tmp/before] [--tree .] [--quick] [--bus]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
CONFIGS = ("before", "off", "on", "on_unsampled")


def _settings(workload: str, n: int, tracing: dict[str, Any] | None, tmp: str) -> Any:
    from levibot.settings import load_settings

    node = {"groups": ["all"], "http_port": -1, "stop_when_sources_done": True}
    if workload == "chain":
        from tests.pipeline import GROUPS

        sections: dict[str, Any] = {
            "groups": {"all": ("counter", "square", "sink"), **GROUPS},
            "node": node,
            "counter": {"count": n},
        }
    else:
        bars = os.environ["BENCH_TRACING_BARS"]  # fetched once by the parent: same file for all
        sections = {
            "node": {**node, "replay": True},
            "storage": {"data_dir": tmp},
            "groups": {"all": ["feed", "feature", "scoring", "risk", "order"]},
            "feed": {"replay": {"path": bars, "limit": n}},
            "scoring": {"strategies": ["ema_cross"]},
            "risk": {"preset": "normal", "sizing": "all_in", "persist": False},
            "order": {"fill": "next_open", "persist": False},
        }
    if tracing is not None:  # never set for "off" and "before": the default applies
        sections["tracing"] = tracing
    return load_settings(None, environ={}, overrides=sections)


def worker(workload: str, n: int, config: str) -> dict[str, float]:
    """Run one workload once in this process; return its CPU and wall time."""
    import anyio

    from levibot.logging import configure
    from levibot.runtime.node import Node

    configure("warning", "json")
    with tempfile.TemporaryDirectory() as tmp:
        tracing: dict[str, Any] | None = None
        if config == "on":
            tracing = {"enabled": True, "exporter": "file", "path": f"{tmp}/spans.jsonl"}
            tracing["max_queue"] = 10 * n  # every span exported: none dropped, all paid for
        elif config == "on_unsampled":
            tracing = {"enabled": True, "exporter": "file", "path": f"{tmp}/spans.jsonl"}
            tracing["sample_ratio"] = 0.0
        node = Node(_settings(workload, n, tracing, tmp))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        code = anyio.run(
            lambda: node.run(handle_signals=False), backend_options={"use_uvloop": True}
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        assert code == 0, code
        spans = 0
        if config == "on":
            spans = sum(1 for _ in open(f"{tmp}/spans.jsonl"))  # noqa: SIM115
    return {"cpu_s": cpu, "wall_s": wall, "spans": spans}


def _run(tree: Path, workload: str, n: int, config: str) -> dict[str, float]:
    from levibot.data import ensure_btcusdt

    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_TRACING_BARS": str(ensure_btcusdt())}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", workload, str(n), config],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{config} {workload} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the configurations ``repeats`` times per workload; return the medians."""
    sizes = {"chain": 5_000 if args.quick else 20_000, "pipeline": 500 if args.quick else 1_500}
    configs = [c for c in CONFIGS if c != "before" or args.before]
    doc: dict[str, Any] = {"repeats": args.repeats, "sizes": sizes, "workloads": {}}
    for workload, n in sizes.items():
        samples: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
        for _ in range(args.repeats):
            for config in configs:
                tree = Path(args.before) if config == "before" else Path(args.tree)
                samples[config].append(_run(tree, workload, n, config))
        medians: dict[str, dict[str, Any]] = {
            c: {
                "cpu_us_per_msg": statistics.median(s["cpu_s"] for s in runs) / n * 1e6,
                "wall_us_per_msg": statistics.median(s["wall_s"] for s in runs) / n * 1e6,
                "cpu_us_runs": [round(s["cpu_s"] / n * 1e6, 2) for s in runs],
            }
            for c, runs in samples.items()
        }
        if "on" in samples:
            medians["on"]["spans_per_msg"] = samples["on"][0]["spans"] / n
        base = medians["off"]["cpu_us_per_msg"]
        ratios = {f"{c}/off": medians[c]["cpu_us_per_msg"] / base for c in configs if c != "off"}
        doc["workloads"][workload] = {"n": n, "configs": medians, "cpu_ratios": ratios}
    return doc


def run_bus(args: argparse.Namespace) -> dict[str, Any]:
    """``bench_bus --quick`` alternately in ``--before`` and here; medians of each key's
    p50 latency and throughput relative to that run's bare baseline."""
    trees = {"before": Path(args.before), "off": Path(args.tree)}
    ratios: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            subprocess.run(
                [sys.executable, "-m", "bench.bench_bus", "--quick"], cwd=tree, env=env,
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            res = json.loads((tree / "bench" / "results" / "bus.json").read_text())["results"]
            for key, r in res.items():
                hops, config, mode = key.split("/")
                if config == "bare":
                    continue
                bare = res[f"{hops}/bare/{mode}"]
                metric = "p50_us" if mode == "latency" else "msgs_per_s"
                ratios[name].setdefault(f"{key} {metric} ÷ bare", []).append(
                    r[metric] / bare[metric]
                )
    return {
        "repeats": args.repeats,
        "bus": {
            key: {t: statistics.median(ratios[t][key]) for t in trees} for key in ratios["off"]
        },
    }


def bus_table(doc: dict[str, Any]) -> str:
    lines = [f"{'bench_bus (medians)':48} {'before':>8} {'off':>8} {'off/before':>10}"]
    for key, m in doc["bus"].items():
        lines.append(f"{key:48} {m['before']:8.3f} {m['off']:8.3f} {m['off'] / m['before']:10.3f}")
    return "\n".join(lines)


def table(doc: dict[str, Any]) -> str:
    lines = [
        f"{'workload':10} {'config':14} {'CPU µs/msg':>11} {'wall µs/msg':>12} {'÷ off':>7}",
    ]
    for workload, w in doc["workloads"].items():
        base = w["configs"]["off"]["cpu_us_per_msg"]
        for config, m in w["configs"].items():
            lines.append(
                f"{workload:10} {config:14} {m['cpu_us_per_msg']:11.2f} "
                f"{m['wall_us_per_msg']:12.2f} {m['cpu_us_per_msg'] / base:7.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        print(json.dumps(worker(argv[1], int(argv[2]), argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", default="", help="a tree of the commit before tracing")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--tree", default=str(ROOT), help="the tree measured as off/on (default: this one; a "
        "snapshot of it keeps others' edits from landing between the runs)",
    )  # fmt: skip
    parser.add_argument("--bus", action="store_true", help="bench_bus before vs off")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if args.bus:
        if not args.before:
            parser.error("--bus needs --before")
        doc = run_bus(args)
        print(bus_table(doc))
    else:
        doc = run(args)
        print(table(doc))
    args.out = args.out or str(RESULTS / ("tracing_bus.json" if args.bus else "tracing.json"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

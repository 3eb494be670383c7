"""End-to-end pipeline benchmark: tick-to-order latency per stage and sustained throughput.

For each configuration, the engine's real actors (feature, scoring with the ``onnx`` strategy
on a real 200-tree model, risk, order) run beside the bare pipeline (``bench.bare_pipeline``:
plain queues, the same stage work) measured in the same run, on the same bars at the same pace:

  inproc   one process, in-memory bus (``levibot run`` with every group)
  mirror   the same with the NATS mirror on (unique namespace and stream per run)
  procs    the groups as three ``levibot run --groups`` processes over NATS:
           ingest (source, feature) | scoring | execution (risk, order)
           and, in the same run, its transport floors (``bench.raw_nats_split``): the split's
           own traffic between three processes with no engine and no stage work, over raw
           nats-py (``floor``) and over levibot's own ``CoreLink`` (``floor-link``, the client
           the engine uses). On a VM each message that wakes another process costs tens of µs
           of CPU on both sides whatever sends it; the ``floor`` ratios say how much of the
           split's cost that is, and how much the engine adds on top

Input: the real BTCUSDT 1h klines as 1s bars over ``--symbols`` symbols; one bar is one
tick-equivalent that goes through every stage. After an unmeasured warm-up, the rate steps up
(``--rates``, ×2 per step by default); each step lasts ``--step-s``, then ``--pause-s`` of
quiet. Latency at a stage's output is its message's ``ts_init - ts_ingress`` (wall clock).
Risk decides on a signal only when the wanted position changes (thresholds at the model's
median probability: long at or above, flat below; preset "off"), so its "orders" are intents
and denials counted alike. End to end is the order stage: the fill's ``ts_init`` minus the
bar's ingress, for orders from signals (exit-rule fills, a bar straight to the order actor,
are counted apart). Sustained throughput: the highest rate whose end-to-end p99 stays under
``--bound-ms`` with the source keeping up and nothing conflated or dropped. CPU per bar (all
the pipeline's processes, user + system) is reported too: on a machine shared with other
work it is the steadier measure of the engine's overhead.

Engine settings that differ from the defaults, in the engine and the bare pipeline alike:
risk and order persistence off (no state file per order), paper fills at the signal bar's
close, cash large enough that no order is refused. Recorder actors subscribe to each stage's
output in the engine (a mailbox hop each, off the measured path but on the same loop).

    python -m bench.bench_pipeline [--quick] [--configs inproc mirror procs] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from bench import pipeline_model as pm
from bench.bare_pipeline import CASH, run_bare
from bench.pipeline_engine import run_inproc, run_procs
from bench.pipeline_stats import STAGES, in_window, summarize, sustained
from bench.raw_nats_split import run_raw_split
from levibot.testenv import NATS_URL

RESULTS = Path(__file__).parent / "results"
CONFIGS = ("inproc", "mirror", "procs")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "symbols": args.symbols, "warmup_bars": args.warmup_bars, "settle_s": args.settle_s,
        "warmup_rate": args.warmup_rate,
        "rates": tuple(args.rates), "step_s": args.step_s, "pause_s": args.pause_s,
    }  # fmt: skip


def engine_sections(args: argparse.Namespace, model_id: str, threshold: float) -> dict[str, Any]:
    """Return the config sections of the engine's actors under test."""
    return {
        "pbars": _params(args),
        "scoring": {"registry_dir": str(pm.REGISTRY), "model_id": model_id,
                    "long_threshold": threshold, "short_threshold": threshold,
                    "strategies": ["onnx"]},
        "risk": {"preset": "off", "initial_equity": CASH, "persist": False},
        "order": {"cash": CASH, "fill": "close", "persist": False},
    }  # fmt: skip


def _median_steps(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Return per-step medians over repeated ladders (verdict: the majority)."""
    if len(runs) == 1:
        return runs[0]
    out = []
    for group in zip(*runs, strict=False):  # a stuck run has fewer steps
        step = dict(group[0])
        for key in ("achieved_per_s", "lost_before_risk", "mailbox_drops", "cpu_us_per_bar"):
            step[key] = statistics.median(s[key] for s in group)
        step["stages"] = {
            stage: {k: statistics.median(s["stages"][stage].get(k, 0) for s in group)
                    for k in group[0]["stages"][stage]}
            for stage in STAGES
        }  # fmt: skip
        step["e2e"] = step["stages"]["order"]
        step["ok"] = sum(s["ok"] for s in group) * 2 > len(group)
        out.append(step)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every configuration beside the bare pipeline; return the result document."""
    klines = pm.load_real_klines()
    model_id = pm.ensure_model(trees=args.trees)
    threshold = pm.median_probability(pm.REGISTRY, model_id, klines)
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.scorer import Scorer

    scorer = Scorer.from_registry(ModelRegistry(pm.REGISTRY), model_id)
    sections = engine_sections(args, model_id, threshold)
    bound_us = args.bound_ms * 1e3
    pause_ns = int(args.pause_s * 0.8e9)
    results: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    errors: dict[str, str] = {}
    cpu_cmp: dict[str, dict[str, float]] = {}
    for config in args.configs:
        # procs also runs its transport floors: the same traffic, no engine, over raw nats-py
        # and over the link.
        systems = (
            ("bare", "engine", "floor", "floor-link") if config == "procs" else ("bare", "engine")
        )
        ladders: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in systems}
        for _ in range(args.repeats):
            for system in systems:  # interleaved: all see the same load drift
                t0 = time.monotonic()
                if system.startswith("floor"):
                    client = "link" if system == "floor-link" else "py"
                    records, steps, drops, cpu, _ = run_raw_split(_params(args), args.nats, client)
                elif system == "bare":
                    records, steps, cpu = uvloop.run(
                        run_bare(klines, scorer=scorer, threshold=threshold, **_params(args))
                    )
                    drops: list[tuple[int, float]] = []
                else:
                    try:
                        if config == "procs":
                            records, steps, drops, cpu, error = run_procs(sections, args.nats)
                        else:
                            nats = args.nats if config == "mirror" else ""
                            records, steps, drops, cpu, error = run_inproc(sections, nats)
                    except RuntimeError as exc:  # a failed node: say so, go on
                        records, steps, drops, cpu, error = {}, [], [], [], str(exc)
                    if error:
                        print(f"  {config}/{system}: FAILED: {error}", flush=True)
                        errors[config] = error
                    if not steps:
                        break
                ladder = summarize(records, steps, drops, cpu, bound_us=bound_us, pause_ns=pause_ns)
                ladders[system].append(ladder)
                first = steps[0]
                rows = in_window(records["order"], first["start_ns"], first["end_ns"])
                raw[f"{config}/{system}"] = rows[rows[:, 2] == 0, 1]
                print(f"  {config}/{system}: {time.monotonic() - t0:.1f}s", flush=True)
            if config in errors:
                break
        for system in systems:
            if not ladders[system]:
                results[f"{config}/{system}"] = {"error": errors.get(config, "no run")}
                continue
            steps_out = _median_steps(ladders[system])
            results[f"{config}/{system}"] = {
                "steps": steps_out,
                "latency": steps_out[0]["stages"] | {"e2e": steps_out[0]["e2e"]},
                "latency_rate": steps_out[0]["rate"],
                "sustained_per_s": sustained(steps_out),
            }
            if system == "engine" and config in errors:
                results[f"{config}/{system}"]["error"] = errors[config]
            print(line(f"{config}/{system}", results[f"{config}/{system}"]), flush=True)
        eng, bare = results[f"{config}/engine"], results[f"{config}/bare"]
        if "steps" in eng and "steps" in bare:
            ec, bc, rate = cpu_common(eng["steps"], bare["steps"])
            cpu_cmp[config] = {"engine_us_per_bar": ec, "bare_us_per_bar": bc,
                           "ratio": ec / bc if bc else float("nan"), "rate": rate}  # fmt: skip
    doc: dict[str, Any] = {
        "results": results, "cpu": cpu_cmp, "errors": errors, "raw_e2e_ns": raw,
        "model_id": model_id, "threshold": threshold,
    }  # fmt: skip
    if args.hop_count and args.configs != ["inproc"]:
        doc["hop"] = hop_section(args)
    if args.idle_rate:
        bare = functools.partial(run_bare, klines, scorer=scorer, threshold=threshold)
        doc["idle"] = idle_section(args, sections, bound_us, pause_ns, bare)
    if args.partitions:
        doc["partitions"] = partition_section(args, sections, bound_us, pause_ns)
    if args.rest_rounds:
        doc["rest"] = rest_section(args)
    doc["ratios"] = ratios(doc)
    return doc


def rest_section(args: argparse.Namespace) -> dict[str, Any]:
    """REST throughput with rate limits shared through Redis against in memory
    (``bench.bench_rest_limits``: wrk when installed, its three cases, rounds alternated)."""
    import shutil

    import anyio

    from bench import bench_rest_limits as rl

    rest = rl.parser().parse_args(
        ["--rounds", str(args.rest_rounds), "--seconds", str(args.rest_seconds)]
    )
    rest.wrk = shutil.which("wrk")
    t0 = time.monotonic()
    report = anyio.run(rl.run, rest, backend_options={"use_uvloop": True})
    print(f"  rest limits ({report['load']}): {time.monotonic() - t0:.1f}s", flush=True)
    return report


def partition_section(
    args: argparse.Namespace, sections: dict[str, Any], bound_us: float, pause_ns: int
) -> dict[str, Any]:
    """The split with scoring as 1, 2, 4 … replicas (``--partitions``): sustained rate and CPU
    per bar (every process) at each rate of the ladder."""
    out: dict[str, Any] = {}
    for n in args.partitions:
        t0 = time.monotonic()
        records, steps, drops, cpu, _ = run_procs(sections, args.nats, scoring_partitions=n)
        ladder = summarize(records, steps, drops, cpu, bound_us=bound_us, pause_ns=pause_ns)
        out[str(n)] = {
            "sustained_per_s": sustained(ladder),
            "cpu_us_per_bar": {str(st["rate"]): st["cpu_us_per_bar"] for st in ladder},
            "e2e_p50_us": {str(st["rate"]): st["e2e"]["p50_us"] for st in ladder},
        }
        print(f"  scoring ×{n}: {time.monotonic() - t0:.1f}s sustained="
              f"{out[str(n)]['sustained_per_s']:,.0f}/s cpu/bar="
              f"{out[str(n)]['cpu_us_per_bar']}", flush=True)  # fmt: skip
    return out


def hop_section(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one cross-process hop: raw nats-py and levibot (``bench.bench_bus``'s one-hop
    split), interleaved, paced for latency and unpaced for throughput."""
    from bench.bench_bus import _procs
    from bench.raw_nats_hop import WARMUP, hop

    out: dict[str, Any] = {}
    for mode, count, rate in (("latency", args.hop_count, args.hop_rate),
                              ("throughput", args.hop_count * 4, 0.0)):  # fmt: skip
        for system in ("raw", "levibot"):
            t0 = time.monotonic()
            if system == "raw":
                r = hop(args.nats, count, rate, WARMUP)
            else:
                r = _procs(1, count, rate, WARMUP, args.nats)
            out[f"{system}/{mode}"] = r
            print(f"  hop {system}/{mode}: {time.monotonic() - t0:.1f}s  "
                  + "  ".join(f"{k}={v:,.1f}" for k, v in r.items()), flush=True)  # fmt: skip
    return out


def idle_section(
    args: argparse.Namespace,
    sections: dict[str, Any],
    bound_us: float,
    pause_ns: int,
    bare: Callable[..., Any],
) -> dict[str, Any]:
    """Tick-to-order latency with ``[node] idle`` sleep and spin: one process, one symbol, at a
    low paced rate (``--idle-rate``), interleaved ``--idle-repeats`` times (median), beside the
    bare pipeline (``bare``: ``run_bare`` with its model) at the same pace: the stage code alone,
    which no idle strategy of the engine can undercut."""
    pace = {"symbols": 1, "rates": (args.idle_rate,), "step_s": args.idle_step_s}
    low = {**sections, "pbars": {**sections["pbars"], **pace}}
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "sleep": [], "spin": []}
    for _ in range(args.idle_repeats):
        for idle in runs:
            if idle == "bare":
                records, steps, cpu = uvloop.run(bare(**{**_params(args), **pace}))
                drops: list[tuple[int, float]] = []
                error = None
            else:
                records, steps, drops, cpu, error = run_inproc(low, "", idle=idle)
            if error or not steps:
                raise RuntimeError(f"idle={idle}: {error or 'no step'}")
            step = summarize(records, steps, drops, cpu, bound_us=bound_us, pause_ns=pause_ns)[0]
            runs[idle].append(step)
            e = step["e2e"]
            print(f"  idle {idle}: e2e p50={e['p50_us']:.0f}µs p99={e['p99_us']:.0f}µs "
                  f"cpu={step['cpu_us_per_bar']:.0f}µs/bar", flush=True)  # fmt: skip
    out: dict[str, Any] = {"rate": args.idle_rate, "symbols": 1}
    for idle, steps in runs.items():
        out[idle] = {
            "e2e": {k: statistics.median(s["e2e"][k] for s in steps) for k in steps[0]["e2e"]},
            "stages": {stage: {k: statistics.median(s["stages"][stage][k] for s in steps)
                               for k in steps[0]["stages"][stage]} for stage in STAGES},
            "cpu_us_per_bar": statistics.median(s["cpu_us_per_bar"] for s in steps),
        }  # fmt: skip
    return out


def _at_common_rate(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Return (a, b) CPU µs per bar at the highest rate both passed at (else the lowest rate
    both ran), and that rate."""
    pairs = list(zip(a, b, strict=False))
    both = [(x, y) for x, y in pairs if x["ok"] and y["ok"]] or pairs[:1]
    if not both:
        return float("nan"), float("nan"), 0.0
    x, y = both[-1]
    return x["cpu_us_per_bar"], y["cpu_us_per_bar"], x["rate"]


def ratios(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every ratio issue 12 names, each from this run: name, value, goal, met, basis."""
    res = doc["results"]
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, op: str, goal: float, basis: str) -> None:
        met = value <= goal if op == "<=" else value >= goal
        out.append({"name": name, "value": value, "goal": f"{op} {goal:g}",
                    "met": bool(met) if value == value else False, "basis": basis})  # fmt: skip

    def info(name: str, value: float, basis: str) -> None:
        """A figure that explains a goal (no goal of its own)."""
        out.append({"name": name, "value": value, "goal": "—", "met": None, "basis": basis})

    single, mirror, split = (res.get(f"{c}/engine", {}) for c in ("inproc", "mirror", "procs"))
    hop = doc.get("hop", {})
    if "steps" in single and "steps" in split:
        sc, cc, rate = _at_common_rate(split["steps"], single["steps"])
        add("split CPU/bar ÷ single", sc / cc, "<=", 1.5,
            f"{sc:.0f} ÷ {cc:.0f} µs/bar at {rate:,.0f} bars/s")  # fmt: skip
        ss, cs = split["sustained_per_s"], single["sustained_per_s"]
        add("split sustained ÷ single", ss / cs if cs else float("nan"), ">=", 1.0,
            f"{ss:,.0f} ÷ {cs:,.0f} bars/s")  # fmt: skip
        sp, cp = split["latency"]["e2e"]["p50_us"], single["latency"]["e2e"]["p50_us"]
        if "raw/latency" in hop:
            rp = hop["raw/latency"]["p50_us"]
            add("split e2e p50 ÷ (single p50 + 2 raw hops)", sp / (cp + 2 * rp), "<=", 1.0,
                f"{sp:.0f} ÷ ({cp:.0f} + 2×{rp:.0f}) µs")  # fmt: skip
        s99, c99 = split["latency"]["e2e"]["p99_us"], single["latency"]["e2e"]["p99_us"]
        add("split e2e p99 ÷ single", s99 / c99, "<=", 3.0, f"{s99:.0f} ÷ {c99:.0f} µs")
        # The least splitting costs here: the split's own traffic, no engine, over raw nats-py
        # and over the engine's own client (what is left to the machine), at the rate of the
        # CPU ratio above.
        for key, on in (("procs/floor", ""), ("procs/floor-link", " on the link")):
            floor = res.get(key, {})
            if "steps" not in floor:
                continue
            fc = next((st["cpu_us_per_bar"] for st in floor["steps"] if st["rate"] == rate),
                      float("nan"))  # fmt: skip
            info(f"floor{on}: (single + raw split traffic) ÷ single CPU/bar", (cc + fc) / cc,
                 f"({cc:.0f} + {fc:.0f}) ÷ {cc:.0f} µs/bar at {rate:,.0f} bars/s")  # fmt: skip
            info(f"split's added CPU/bar ÷ raw split traffic's{on}", (sc - cc) / fc,
                 f"({sc:.0f} − {cc:.0f}) ÷ {fc:.0f} µs/bar")  # fmt: skip
            fp, f99 = floor["latency"]["e2e"]["p50_us"], floor["latency"]["e2e"]["p99_us"]
            info(f"split e2e p50 ÷ raw split traffic's{on}", sp / fp, f"{sp:.0f} ÷ {fp:.0f} µs")
            info(f"split e2e p99 ÷ raw split traffic's{on}", s99 / f99,
                 f"{s99:.0f} ÷ {f99:.0f} µs")  # fmt: skip
            fs = floor["sustained_per_s"]
            info(f"raw split traffic{on} sustained ÷ single", fs / cs if cs else float("nan"),
                 f"{fs:,.0f} ÷ {cs:,.0f} bars/s")  # fmt: skip
    if "steps" in single and "steps" in mirror:
        mc, cc, rate = _at_common_rate(mirror["steps"], single["steps"])
        add("mirror CPU/bar ÷ mirror off", mc / cc, "<=", 1.2,
            f"{mc:.0f} ÷ {cc:.0f} µs/bar at {rate:,.0f} bars/s")  # fmt: skip
    if "raw/latency" in hop and "levibot/latency" in hop:
        lp, rp = hop["levibot/latency"]["p50_us"], hop["raw/latency"]["p50_us"]
        add("hop p50 ÷ raw nats-py", lp / rp, "<=", 1.2, f"{lp:.0f} ÷ {rp:.0f} µs")
        lt, rt = hop["levibot/throughput"]["msgs_per_s"], hop["raw/throughput"]["msgs_per_s"]
        add("hop msgs/s ÷ raw nats-py", lt / rt, ">=", 0.8, f"{lt:,.0f} ÷ {rt:,.0f} msg/s")
    if "rest" in doc:
        from bench.bench_rest_limits import ratios as rest_ratios

        out += rest_ratios(doc["rest"])
    idle = doc.get("idle")
    if idle:
        sp, zp = idle["spin"]["e2e"]["p50_us"], idle["sleep"]["e2e"]["p50_us"]
        add("idle=spin e2e p50 µs (1 symbol)", sp, "<=", 100.0,
            f"at {idle['rate']:,.0f} bars/s; sleep: {zp:.0f} µs")  # fmt: skip
        s99, z99 = idle["spin"]["e2e"]["p99_us"], idle["sleep"]["e2e"]["p99_us"]
        add("idle=spin e2e p99 ÷ sleep", s99 / z99, "<=", 1.0, f"{s99:.0f} ÷ {z99:.0f} µs")
        if "bare" in idle:  # the stage code alone at that pace: the floor under both modes
            bp = idle["bare"]["e2e"]["p50_us"]
            info("bare pipeline e2e p50 µs (1 symbol): the stage code alone", bp,
                 f"at {idle['rate']:,.0f} bars/s, no mailboxes, bus or metrics")  # fmt: skip
            info("idle=spin e2e p50 ÷ bare pipeline's", sp / bp, f"{sp:.0f} ÷ {bp:.0f} µs")
    return out


def ratio_table(doc: dict[str, Any]) -> str:
    """Return the markdown table of the issue's ratios, each measured in this run."""
    rows = ["| ratio (this run) | value | goal | met | from |", "|---|---:|---|---|---|"]
    for r in doc["ratios"]:
        met = "—" if r["met"] is None else "yes" if r["met"] else "no"
        rows.append(f"| {r['name']} | {r['value']:.2f} | {r['goal']} | {met} | {r['basis']} |")
    hop = doc.get("hop")
    if hop:
        rows += ["", "| one hop | p50 µs | p99 µs | msgs/s |", "|---|---:|---:|---:|"]
        for system in ("raw", "levibot"):
            lat, thr = hop[f"{system}/latency"], hop[f"{system}/throughput"]
            rows.append(f"| {system} | {lat['p50_us']:.0f} | {lat['p99_us']:.0f} | "
                        f"{thr['msgs_per_s']:,.0f} |")  # fmt: skip
    parts = doc.get("partitions")
    if parts:
        rates = list(next(iter(parts.values()))["cpu_us_per_bar"])
        rows += ["", "| scoring replicas | sustained bars/s | "
                 + " | ".join(f"CPU µs/bar at {float(r):,.0f}" for r in rates) + " |",
                 "|---|---:|" + "---:|" * len(rates)]  # fmt: skip
        for n, p in parts.items():
            cells = " | ".join(f"{p['cpu_us_per_bar'][r]:.0f}" for r in rates)
            rows.append(f"| {n} | {p['sustained_per_s']:,.0f} | {cells} |")
    idle = doc.get("idle")
    if idle:
        rows += ["", f"idle strategy, 1 symbol at {idle['rate']:,.0f} bars/s (µs)",
                 "| idle | e2e p50 | e2e p99 | p99.9 | CPU µs/bar |",
                 "|---|---:|---:|---:|---:|"]  # fmt: skip
        for name in [n for n in ("bare", "sleep", "spin") if n in idle]:
            e = idle[name]["e2e"]
            rows.append(f"| {name} | {e['p50_us']:.0f} | {e['p99_us']:.0f} | "
                        f"{e['p999_us']:.0f} | {idle[name]['cpu_us_per_bar']:.0f} |")  # fmt: skip
    return "\n".join(rows)


def cpu_common(
    engine: list[dict[str, Any]], bare: list[dict[str, Any]]
) -> tuple[float, float, float]:
    """Return (engine, bare) CPU µs per bar at the highest rate both passed at, and that rate.

    The same rate for both, because the figure falls as the rate rises (idle work spreads over
    more bars, and bars arriving together share a loop wake-up).
    """
    both = [(e, b) for e, b in zip(engine, bare, strict=False) if e["ok"] and b["ok"]]
    if not both:
        return float("nan"), float("nan"), 0.0
    e, b = both[-1]
    return e["cpu_us_per_bar"], b["cpu_us_per_bar"], e["rate"]


def line(key: str, r: dict[str, Any]) -> str:
    """Return one terminal line for a configuration."""
    e = r["latency"]["e2e"]
    return (f"{key:16s} e2e p50={e['p50_us']:.0f}µs p99={e['p99_us']:.0f}µs "
            f"p99.9={e['p999_us']:.0f}µs max={e['max_us']:.0f}µs "
            f"sustained={r['sustained_per_s']:,.0f}/s")  # fmt: skip


def table(doc: dict[str, Any], configs: list[str]) -> str:
    """Return the markdown table: per configuration and stage, engine vs bare."""
    res = doc["results"]
    failed = [c for c in configs if c in doc["errors"]]
    configs = [c for c in configs if "latency" in res[f"{c}/engine"]]
    rows = [
        f"latency at {doc['args']['rates'][0]:,.0f} bars/s (µs); sustained: highest rate with "
        f"e2e p99 < {doc['args']['bound_ms']} ms, no loss",
        "| config | stage | p50 | p99 | p99.9 | max | bare p50 | bare p99 | ×bare p50 "
        "| ×bare p99 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        eng, bare = res[f"{config}/engine"]["latency"], res[f"{config}/bare"]["latency"]
        for stage in (*STAGES, "e2e"):
            e, b = eng[stage], bare[stage]
            rows.append(
                f"| {config} | {stage} | {e['p50_us']:.0f} | {e['p99_us']:.0f} | "
                f"{e['p999_us']:.0f} | {e['max_us']:.0f} | {b['p50_us']:.0f} | {b['p99_us']:.0f} | "
                f"{e['p50_us'] / b['p50_us']:.2f} | {e['p99_us'] / b['p99_us']:.2f} |"
            )
    rows += [
        "",
        "| config | sustained bars/s | bare | ×bare | CPU µs/bar | bare | ×bare | at bars/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        e, b = res[f"{config}/engine"], res[f"{config}/bare"]
        es, bs = e["sustained_per_s"], b["sustained_per_s"]
        c = doc["cpu"][config]
        rows.append(
            f"| {config} | {es:,.0f} | {bs:,.0f} | {es / bs if bs else float('nan'):.2f} | "
            f"{c['engine_us_per_bar']:.0f} | {c['bare_us_per_bar']:.0f} | {c['ratio']:.2f} | "
            f"{c['rate']:,.0f} |"
        )
    rows += [
        f"{c}: FAILED (figures above: the steps before it): {doc['errors'][c]}" for c in failed
    ]
    return "\n".join(rows)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    p.add_argument("--rates", type=float, nargs="+",
                   default=[500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0])  # fmt: skip
    p.add_argument("--step-s", type=float, default=2.0)
    p.add_argument("--pause-s", type=float, default=1.0)
    p.add_argument("--symbols", type=int, default=16)
    p.add_argument("--warmup-bars", type=int, default=240, help="per symbol (≥ 200: warm-up)")
    p.add_argument("--warmup-rate", type=float, default=4_000.0, help="bars/s, unmeasured")
    p.add_argument("--settle-s", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1, help="ladders per configuration (median)")
    p.add_argument("--bound-ms", type=float, default=10.0, help="e2e p99 bound for throughput")
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--trees", type=int, default=200, help="trees of the bench model (cached)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--hop-count",
        type=int,
        default=3000,
        help="messages of the one-hop latency run (4× unpaced); 0: no hop section",
    )
    p.add_argument("--hop-rate", type=float, default=2000.0, help="msg/s of the hop latency run")
    p.add_argument(
        "--idle-rate",
        type=float,
        default=100.0,
        help="bars/s of the idle sleep/spin comparison (1 symbol); 0: none",
    )
    p.add_argument("--idle-step-s", type=float, default=5.0)
    p.add_argument("--idle-repeats", type=int, default=1)
    p.add_argument("--partitions", type=int, nargs="*", default=[],
                   help="also run the split with scoring as N replicas (1 2 4)")  # fmt: skip
    p.add_argument("--rest-rounds", type=int, default=3,
                   help="rounds of bench_rest_limits (REST limits in Redis); 0: none")  # fmt: skip
    p.add_argument("--rest-seconds", type=int, default=2, help="per REST round and side")
    p.add_argument("--quick", action="store_true", help="two short steps (about 4 min in all)")
    args = p.parse_args(argv)
    if args.quick:
        args.rates, args.step_s, args.pause_s = [1_000.0, 2_000.0], 1.0, 0.5
        args.symbols, args.warmup_bars, args.settle_s = 8, 210, 0.5
        args.idle_step_s, args.rest_seconds = 3.0, 1
        args.hop_count = min(args.hop_count, 1000)  # an explicit 0 still means none
        args.rest_rounds = min(args.rest_rounds, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON and plots under ``--out``."""
    from levibot.logging import configure

    args = parse(argv)
    configure("warning")
    started = time.time()
    doc = run(args)
    raw = doc.pop("raw_e2e_ns")
    doc |= {
        "machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": round(time.time() - started, 1),
        "notes": ["latency in µs at the first (lowest) rate; e2e is the order stage (fill)",
                  "cpu: µs per bar, all the pipeline's processes, at the highest rate both the "
                  "engine and the bare pipeline passed at",
                  "risk 'orders' are intents and denials alike; risk preset 'off'",
                  "risk/order persistence off in both engine and bare"],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(doc, indent=2))
    print()
    print(table(doc, args.configs))
    print()
    print(ratio_table(doc))
    try:
        from bench.pipeline_plots import plot

        for path in plot(doc, raw, args.out):
            print(f"wrote {path}")
    except ImportError as exc:  # matplotlib is a bench extra
        print(f"no plots: {exc}", file=sys.stderr)
    arrays = {k.replace("/", "_"): v for k, v in raw.items()}
    np.savez_compressed(args.out / "pipeline_e2e.npz", **arrays)
    print(f"wrote {args.out / 'pipeline.json'}")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

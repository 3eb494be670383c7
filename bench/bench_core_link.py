"""The split over ``[nats] core_link`` (levibot's lean core connection) against nats-py, one run.

Two measurements, each run with the link and without it, alternated (A, B, then B, A, ...), so
both see the same drift of a shared machine; medians over ``--repeats``, ratios link ÷ nats-py:

  hop     ``bench.bench_bus``'s one-hop split (a source node and a sink node), paced at
          ``--hop-rate`` msg/s for latency and unpaced for throughput; raw nats-py's hop
          (``bench.raw_nats_hop``) in the same rounds, for scale
  split   ``levibot bench``'s ingest | scoring | execution processes at ``--rate`` bars/s over
          ``--symbols`` symbols: CPU per bar of the three processes, e2e p50 and p99
  mirror  the same engine in one process with the NATS mirror on (no remote consumer: only
          durable messages go out, their JetStream publishes on the link or on nats-py), CPU
          per bar; and once per round with no NATS at all, for ``levibot bench``'s ratio
          "mirror ÷ off"

With the link, durable publishes ride it too (their acks read there); JetStream consumers and
acks of received messages stay on nats-py in both.

    python -m bench.bench_core_link [--repeats 3] [--rate 500] [--mirror-rate 1000] [--symbols 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench import pipeline_model as pm
from bench.bench_bus import _procs
from bench.bench_pipeline import engine_sections
from bench.pipeline_engine import run_inproc, run_procs
from bench.pipeline_stats import summarize
from bench.raw_nats_hop import WARMUP, hop
from levibot.logging import configure
from levibot.testenv import NATS_URL

RESULTS = Path(__file__).parent / "results"
MODES = ("nats-py", "link")
ENV = "LEVIBOT__NATS__CORE_LINK"  # the node processes inherit it


def _split(sections: dict[str, Any], nats: str) -> dict[str, float]:
    records, steps, drops, cpu, error = run_procs(sections, nats)
    if error or not steps:
        raise RuntimeError(f"the split failed: {error or 'no step'}")
    step = summarize(records, steps, drops, cpu)[0]
    return {
        "cpu_us_per_bar": step["cpu_us_per_bar"],
        "e2e_p50_us": step["e2e"]["p50_us"],
        "e2e_p99_us": step["e2e"]["p99_us"],
        "achieved_per_s": step["achieved_per_s"],
    }


def _mirror(sections: dict[str, Any], nats: str, core_link: bool | None) -> float:
    """CPU µs/bar of the engine in one process: with the mirror (``core_link`` as given), or
    with no NATS (None)."""
    if core_link is None:
        records, steps, drops, cpu, error = run_inproc(sections, "")
    else:
        ns = f"cl{uuid.uuid4().hex[:8]}"
        mirror = {"url": nats, "namespace": ns, "stream": ns.upper(), "core_link": core_link}
        records, steps, drops, cpu, error = run_inproc({**sections, "nats": mirror}, "")
    if error or not steps:
        raise RuntimeError(f"the single process failed: {error or 'no step'}")
    return float(summarize(records, steps, drops, cpu)[0]["cpu_us_per_bar"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the two modes ``--repeats`` times; return medians and ratios link ÷ nats-py."""
    klines = pm.load_real_klines()
    model_id = pm.ensure_model(trees=args.trees)
    threshold = pm.median_probability(pm.REGISTRY, model_id, klines)
    sections = engine_sections(args, model_id, threshold)
    at = {**sections, "pbars": {**sections["pbars"], "rates": (args.mirror_rate,)}}
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in (*MODES, "raw", "off")}
    for r in range(args.repeats):
        for mode in reversed(MODES) if r % 2 else MODES:
            os.environ[ENV] = "true" if mode == "link" else "false"
            t0 = time.monotonic()
            lat = _procs(1, args.hop_count, args.hop_rate, WARMUP, args.nats)
            thr = _procs(1, args.hop_count * 4, 0.0, WARMUP, args.nats)
            figures = {
                "hop_p50_us": lat["p50_us"],
                "hop_p99_us": lat["p99_us"],
                "hop_msgs_per_s": thr["msgs_per_s"],
                **_split(sections, args.nats),
                "mirror_cpu_us_per_bar": _mirror(at, args.nats, mode == "link"),
            }
            runs[mode].append(figures)
            print(f"  {mode}: {time.monotonic() - t0:.0f}s "
                  + " ".join(f"{k}={v:,.0f}" for k, v in figures.items()), flush=True)  # fmt: skip
        lat, thr = (
            hop(args.nats, args.hop_count, args.hop_rate),
            hop(args.nats, args.hop_count * 4, 0),
        )
        runs["raw"].append({"hop_p50_us": lat["p50_us"], "hop_p99_us": lat["p99_us"],
                            "hop_msgs_per_s": thr["msgs_per_s"]})  # fmt: skip
        runs["off"].append({"cpu_us_per_bar": _mirror(at, args.nats, None)})
    os.environ.pop(ENV, None)
    med = {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in runs.items()}
    return {
        "medians": med,
        "runs": runs,
        "link_vs_nats_py": {k: med["link"][k] / med["nats-py"][k] for k in med["link"]},
        "hop_p50_vs_raw": {m: med[m]["hop_p50_us"] / med["raw"]["hop_p50_us"] for m in MODES},
        "mirror_vs_off": {
            m: med[m]["mirror_cpu_us_per_bar"] / med["off"]["cpu_us_per_bar"] for m in MODES
        },
        "env": {
            "repeats": args.repeats,
            "rate": args.rates[0],
            "symbols": args.symbols,
            "loadavg": os.getloadavg(),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rate", type=float, default=500.0, help="bars/s of the split")
    p.add_argument("--mirror-rate", type=float, default=1000.0, help="bars/s of the mirror")
    p.add_argument("--symbols", type=int, default=8)
    p.add_argument("--step-s", type=float, default=3.0)
    p.add_argument("--hop-count", type=int, default=2000)
    p.add_argument("--hop-rate", type=float, default=2000.0)
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS / "core_link.json")
    args = p.parse_args()
    configure("warning")  # the in-process engine logs every intent at info
    # What engine_sections reads (bench_pipeline's --quick values, one step).
    args.rates, args.pause_s, args.warmup_bars, args.warmup_rate, args.settle_s = (
        [args.rate], 0.5, 210, 2000.0, 0.5,
    )  # fmt: skip
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for mode, figures in result["medians"].items():
        print(f"{mode:8} " + "  ".join(f"{k}={v:,.1f}" for k, v in figures.items()))
    print("link ÷ nats-py: "
          + "  ".join(f"{k} {v:.2f}" for k, v in result["link_vs_nats_py"].items()))  # fmt: skip
    print("hop p50 ÷ raw nats-py: "
          + "  ".join(f"{m} {v:.2f}" for m, v in result["hop_p50_vs_raw"].items()))  # fmt: skip
    print("mirror CPU/bar ÷ off: "
          + "  ".join(f"{m} {v:.2f}" for m, v in result["mirror_vs_off"].items()))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Soak: the whole pipeline in one process at a steady rate for minutes; is memory flat?

The engine's actors (feature, scoring with the real model, risk, order) run as in
``bench.bench_pipeline``'s ``inproc`` configuration, fed by the benchmark's bar source at
``--rate`` bars/s for ``--minutes``, with no recorders (they would grow by design). The
process's resident set size (psutil when installed, else ``/proc/self/statm``) is sampled
every ``--sample-s``; after ``--warmup-s`` the RSS slope is fitted by least squares.

Bounded buffers grow until full by design: the order actor's equity curve (a point per bar and
per fill) and its seen order ids hold 100,000 entries each by default, which at 1,000 bars/s
takes minutes to fill. The soak caps them at ``--buffer-max`` (10,000) so they are full within
the warm-up, and what the slope shows afterwards is growth that nothing bounds.

    python -m bench.soak [--minutes 10] [--rate 1000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from bench import pipeline_model as pm
from bench.bench_pipeline import RESULTS, engine_sections, parse
from levibot.runtime.node import Node
from levibot.settings import load_settings

GROUPS = {"ingest": ["pbars", "feature"], "scoring": ["scoring"], "execution": ["risk", "order"]}


def rss_bytes() -> int:
    """Return this process's resident set size in bytes."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


def slope_mb_per_min(t_s: np.ndarray, rss: np.ndarray) -> float:
    """Return the least-squares slope of RSS (bytes) over time (s), in MB per minute."""
    if len(t_s) < 2:
        return float("nan")
    a, _ = np.polyfit(t_s, rss, 1)
    return float(a * 60 / 1e6)


async def _soak(args: argparse.Namespace, sections: dict[str, Any]) -> dict[str, Any]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["bench.pipeline_actors"], "groups": list(GROUPS),
                     "http_port": -1, "stop_when_sources_done": True},
            "groups": GROUPS,
            "log": {"level": "warning"},
            **sections,
        },
    )  # fmt: skip
    node = Node(settings)
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - t0, rss_bytes()))
            await anyio.sleep(args.sample_s)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        code = await node.run(handle_signals=False)
        samples.append((time.monotonic() - t0, rss_bytes()))
        tg.cancel_scope.cancel()
    if code != 0:
        raise RuntimeError(f"the soak node exited {code}")
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples], dtype=np.float64)
    steps = node.actors["pbars"].steps  # type: ignore[attr-defined]
    start = steps[0]["start_ns"] if steps else 0
    warm = min(args.warmup_s, args.minutes * 30)  # never more than half the run
    measured = t >= warm  # t counts from before the node started: start-up is warm-up too
    stats = node.bus.stats()
    return {
        "rate": args.rate,
        "buffer_max": args.buffer_max,
        "minutes": args.minutes,
        "warmup_s": warm,
        "bars": int(sum(s["bars"] for s in steps)),
        "achieved_per_s": (
            sum(s["bars"] for s in steps) / ((steps[-1]["end_ns"] - start) / 1e9) if steps else 0.0
        ),
        "mailbox_drops": int(sum(d for _, d in stats.values())),
        "rss_first_mb": float(rss[measured][0] / 1e6) if measured.any() else float("nan"),
        "rss_last_mb": float(rss[measured][-1] / 1e6) if measured.any() else float("nan"),
        "rss_max_mb": float(rss.max() / 1e6),
        "slope_mb_per_min": slope_mb_per_min(t[measured], rss[measured]),
        "rss_source": "psutil" if _has_psutil() else "/proc/self/statm",
        "samples": [[float(a), float(b)] for a, b in zip(t, rss, strict=True)],
    }


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def plot(doc: dict[str, Any], out: Path) -> Path:
    """Write ``soak.png``: RSS over time, the warm-up shaded, the fitted slope drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.array(doc["samples"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(s[:, 0] / 60, s[:, 1] / 1e6, "-", linewidth=1.2, label="RSS")
    ax.axvspan(0, doc["warmup_s"] / 60, color="grey", alpha=0.15, label="warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title(f"soak at {doc['rate']:,.0f} bars/s: slope {doc['slope_mb_per_min']:+.3f} MB/min")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the verdict, write ``soak.json`` and ``soak.png``."""
    from levibot.logging import configure

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=1_000.0, help="bars (tick-equivalents) per s")
    p.add_argument("--symbols", type=int, default=16)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--buffer-max", type=int, default=10_000,
                   help="order equity_curve_max and seen_ids_max (see the module doc)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    configure("warning")
    bench = parse(["--symbols", str(args.symbols), "--rates", str(args.rate)])
    bench.step_s, bench.pause_s = args.minutes * 60, 0.5
    klines = pm.load_real_klines()
    model_id = pm.ensure_model()
    sections = engine_sections(
        bench, model_id, pm.median_probability(pm.REGISTRY, model_id, klines)
    )
    sections["order"] |= {"equity_curve_max": args.buffer_max, "seen_ids_max": args.buffer_max}
    doc = anyio.run(_soak, args, sections, backend_options={"use_uvloop": True})
    doc |= {"machine": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version()}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(doc, indent=2))
    print(
        f"soak {args.minutes:g} min at {args.rate:,.0f} bars/s ({doc['achieved_per_s']:,.0f} "
        f"achieved, {doc['bars']:,} bars, {doc['mailbox_drops']} drops): RSS "
        f"{doc['rss_first_mb']:.1f} → {doc['rss_last_mb']:.1f} MB after a "
        f"{doc['warmup_s']:.0f} s warm-up, slope {doc['slope_mb_per_min']:+.3f} MB/min "
        f"({doc['rss_source']})"
    )
    print(f"wrote {args.out / 'soak.json'} and {plot(doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-step statistics of the pipeline benchmark: percentiles per stage, losses, verdicts.

Records are (ts_ingress, latency ns, kind) rows per stage; a record belongs to the step whose
wall-time window holds its ingress. End to end is the order stage (the fill's ``ts_init``
minus the bar's ingress): tick to order executed, for orders that came from a signal; fills of
exit rules (a bar straight to the order actor) are counted apart as ``exits``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STAGES = ("feature", "scoring", "risk", "order")
E2E = "order"


def percentiles(lat_ns: np.ndarray) -> dict[str, float]:
    """Return count, p50, p99, p99.9 and max of ``lat_ns`` in microseconds."""
    if len(lat_ns) == 0:
        return {"n": 0, "p50_us": float("nan"), "p99_us": float("nan"),
                "p999_us": float("nan"), "max_us": float("nan")}  # fmt: skip
    q = np.percentile(lat_ns, [50, 99, 99.9]) / 1e3
    return {
        "n": len(lat_ns),
        "p50_us": float(q[0]),
        "p99_us": float(q[1]),
        "p999_us": float(q[2]),
        "max_us": float(lat_ns.max() / 1e3),
    }


def in_window(rows: np.ndarray, start: int, end: int) -> np.ndarray:
    """Return the rows whose ingress is in ``[start, end]``."""
    if len(rows) == 0:
        return rows
    sel = (rows[:, 0] >= start) & (rows[:, 0] <= end)
    return rows[sel]


def delta(series: list[tuple[int, float]], start: int, end: int, *, through: bool = False) -> float:
    """Return how much a cumulative series sampled as ``(t_ns, value)`` rose in a window;
    ``through``: up to the first sample at or after ``end`` (sparse samples miss nothing)."""
    if not series:
        return 0.0

    def at(t: int) -> float:
        before = [v for ts, v in series if ts <= t]
        return before[-1] if before else series[0][1]

    def after(t: int) -> float:  # the first sample at or after ``t``: nothing of the window missed
        later = [v for ts, v in series if ts >= t]
        return later[0] if later else series[-1][1]

    return (after(end) if through else at(end)) - at(start)


def summarize(
    records: dict[str, np.ndarray],
    steps: list[dict[str, Any]],
    drops: list[tuple[int, float]] | None = None,
    cpu: list[tuple[int, float]] | None = None,
    *,
    bound_us: float = 10_000.0,
    pause_ns: int = 0,
) -> list[dict[str, Any]]:
    """Return one summary per step: offered and achieved rate, stages, losses, verdict.

    ``cpu`` is the cumulative CPU seconds of every process of the pipeline: CPU per bar over a
    step and its pause is the engine's cost, and unlike latency it barely moves with the load
    that other programs put on the machine.

    A step passes when the end-to-end p99 is under ``bound_us``, the source kept up (achieved
    ≥ 95 % of the offered rate), every bar produced a signal (nothing conflated on the way to
    risk) and no mailbox dropped a message.
    """
    out = []
    for step in steps:
        start, end = int(step["start_ns"]), int(step["end_ns"])
        secs = max((end - start) / 1e9, 1e-9)
        stages = {}
        for stage in STAGES:
            rows = in_window(records.get(stage, np.empty((0, 3), np.int64)), start, end)
            extra = {}
            if stage == "risk":
                extra = {"intents": int((rows[:, 2] == 0).sum()),
                         "denials": int((rows[:, 2] == 1).sum())}  # fmt: skip
            elif stage == "order":
                extra = {"exits": int((rows[:, 2] == 1).sum())}
                rows = rows[rows[:, 2] == 0]  # tick to order: fills of orders from signals
            stages[stage] = percentiles(rows[:, 1]) | extra
        bars = int(step["bars"])
        lost = bars - stages["scoring"]["n"]
        dropped = delta(drops or [], start, end + pause_ns, through=True)
        cpu_s = delta(cpu or [], start, end + pause_ns)
        e2e = stages[E2E]
        achieved = bars / secs
        ok = (
            e2e["n"] > 0
            and e2e["p99_us"] <= bound_us
            and achieved >= 0.95 * float(step["rate"])
            and lost <= 0
            and dropped <= 0
        )
        out.append({
            "rate": float(step["rate"]), "achieved_per_s": achieved, "bars": bars,
            "lost_before_risk": lost, "mailbox_drops": dropped, "stages": stages,
            "cpu_us_per_bar": cpu_s * 1e6 / bars if bars and cpu else float("nan"),
            "e2e": e2e, "ok": bool(ok),
        })  # fmt: skip
    return out


def sustained(steps: list[dict[str, Any]]) -> float:
    """Return the highest offered rate of a passing step, every lower step passing too."""
    best = 0.0
    for step in sorted(steps, key=lambda s: s["rate"]):
        if not step["ok"]:
            break
        best = step["rate"]
    return best

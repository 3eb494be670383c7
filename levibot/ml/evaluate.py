"""Out-of-sample metrics of a probability signal, and the naive baselines it must beat.

The cost-aware return trades the signal on a non-overlapping grid (one decision every ``H``
bars, held ``H`` bars): long when ``p >= long``, short when ``p <= short`` and shorting is on,
flat otherwise; each trade pays the round-trip fee. Returns are summed log returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Return the ROC AUC (Mann-Whitney, ties averaged); NaN when one class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = np.asarray(p)[order]
    # Average ranks over runs of equal scores.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Return the mean binary cross-entropy."""
    q = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def positions(p: np.ndarray, long: float, short: float, allow_short: bool) -> np.ndarray:
    """Return the position (+1, 0, −1) the signal takes for each probability."""
    pos = np.where(p >= long, 1.0, 0.0)
    if allow_short:
        pos = np.where(p <= short, -1.0, pos)
    return pos


def trade_returns(
    pos: np.ndarray, fwd: np.ndarray, bar: np.ndarray, horizon: int, cost: float
) -> np.ndarray:
    """Return the net log return of each grid decision (bars ``bar[0]``, ``+H``, ...)."""
    grid = (bar - bar[0]) % horizon == 0 if len(bar) else np.zeros(0, bool)
    return np.asarray(pos[grid] * fwd[grid] - np.abs(pos[grid]) * cost)


def signal_metrics(
    y: np.ndarray,
    p: np.ndarray,
    fwd: np.ndarray,
    bar: np.ndarray,
    *,
    horizon: int,
    cost: float,
    long: float = 0.55,
    short: float = 0.45,
    allow_short: bool = False,
) -> dict[str, Any]:
    """Return AUC, log loss, precision and hit rate at the thresholds, and the net return."""
    pos = positions(p, long, short, allow_short)
    is_long, is_short = p >= long, p <= short
    traded = pos != 0
    net = pos * fwd - np.abs(pos) * cost
    grid_net = trade_returns(pos, fwd, bar, horizon, cost)
    return {
        "rows": len(y),
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "base_rate": float(np.mean(y)) if len(y) else float("nan"),
        "precision_long": float(np.mean(y[is_long])) if is_long.any() else float("nan"),
        "precision_short": float(np.mean(1 - y[is_short])) if is_short.any() else float("nan"),
        "signals_long": int(is_long.sum()),
        "signals_short": int(is_short.sum()),
        "hit_rate": float(np.mean(net[traded] > 0)) if traded.any() else float("nan"),
        "trades": int(np.count_nonzero(grid_net)),
        "net_return": float(grid_net.sum()),
    }


def baselines(
    y: np.ndarray, fwd: np.ndarray, bar: np.ndarray, *, horizon: int, cost: float
) -> dict[str, dict[str, Any]]:
    """Return the metrics of always-flat (p=0.5) and always-long (p=1) on the same rows."""
    kw: dict[str, Any] = {"horizon": horizon, "cost": cost}
    return {
        "always_flat": signal_metrics(y, np.full(len(y), 0.5), fwd, bar, **kw),
        "always_long": signal_metrics(y, np.full(len(y), 1.0), fwd, bar, **kw),
    }

"""PNG plots of a training run: feature importance, calibration, equity of the signal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from levibot.ml.evaluate import positions

if TYPE_CHECKING:
    from levibot.ml.train import TrainResult


def save_plots(result: TrainResult, out: Path) -> list[Path]:
    """Write importance.png, calibration.png and equity.png into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    card, ds = result.card, result.dataset
    paths: list[Path] = []

    gain = result.booster.feature_importance(importance_type="gain")
    order = np.argsort(gain)[-20:]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([ds.names[i] for i in order], gain[order])
    ax.set_title(f"feature importance (gain) · {card.model_id}")
    paths.append(_save(fig, out / "importance.png", plt))

    rows, p = result.oos["rows"], result.oos["p"]
    y = ds.y[rows]
    edges = np.quantile(p, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    mean_p = [p[which == b].mean() for b in range(10) if (which == b).any()]
    mean_y = [y[which == b].mean() for b in range(10) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot(mean_p, mean_y, "o-")
    ax.set_xlabel("predicted probability (out of sample)")
    ax.set_ylabel("observed frequency")
    ax.set_title("calibration (deciles)")
    paths.append(_save(fig, out / "calibration.png", plt))

    long_t, short_t = card.thresholds
    pos = positions(p, long_t, short_t, bool(card.params.get("allow_short", False)))
    bar = ds.bar[rows]
    grid = (bar - bar[0]) % ds.horizon == 0
    fwd = ds.fwd[rows][grid]
    signal = np.cumsum(pos[grid] * fwd - np.abs(pos[grid]) * ds.cost)
    always = np.cumsum(fwd - ds.cost)
    when = ds.ts[rows][grid].astype("datetime64[ns]")
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(when, signal, label="signal (net of fees)")
    ax.plot(when, always, label="always long (net of fees)", alpha=0.6)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("cumulative log return")
    ax.legend()
    ax.set_title("out-of-sample equity")
    paths.append(_save(fig, out / "equity.png", plt))
    return paths


def _save(fig: object, path: Path, plt: object) -> Path:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[attr-defined]
    return path

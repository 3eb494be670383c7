"""Plots of the pipeline benchmark (matplotlib, Agg): latency CDFs and throughput vs latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _cdf(ax: Any, lat_ns: np.ndarray, label: str, style: str) -> None:
    if len(lat_ns) == 0:
        return
    x = np.sort(lat_ns) / 1e3
    y = np.arange(1, len(x) + 1) / len(x)
    ax.plot(x, y, style, label=label, linewidth=1.4)


def plot(doc: dict[str, Any], raw: dict[str, np.ndarray], out: Path) -> list[Path]:
    """Write ``pipeline_cdf.png`` and ``pipeline_throughput.png`` under ``out``."""
    res = doc["results"]
    configs = [c for c in doc["args"]["configs"] if "steps" in res[f"{c}/engine"]]
    if not configs:
        return []
    rate = doc["args"]["rates"][0]
    paths = []
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, config in zip(axes[0], configs, strict=True):
        _cdf(ax, raw.get(f"{config}/engine", np.empty(0)), "levibot", "-")
        _cdf(ax, raw.get(f"{config}/bare", np.empty(0)), "bare pipeline", "--")
        ax.set_xscale("log")
        ax.set_xlabel("tick-to-order latency (µs, log)")
        ax.set_ylabel("fraction of orders")
        ax.set_title(f"{config} at {rate:,.0f} bars/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(out / "pipeline_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, config in enumerate(configs):
        color = f"C{i}"
        for system, style in (("engine", "-o"), ("bare", "--s")):
            steps = doc["results"][f"{config}/{system}"]["steps"]
            x = [s["achieved_per_s"] for s in steps]
            y = [s["e2e"]["p99_us"] / 1e3 for s in steps]
            name = "levibot" if system == "engine" else "bare"
            ax.plot(x, y, style, color=color, label=f"{config} {name}", markersize=4)
    ax.axhline(doc["args"]["bound_ms"], color="grey", linestyle=":", label="bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("achieved bars/s (log)")
    ax.set_ylabel("end-to-end p99 (ms, log)")
    ax.set_title("throughput vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "pipeline_throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths

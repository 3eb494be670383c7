"""The terminal table of a model card's out-of-sample metrics."""

from __future__ import annotations

import math
from typing import Any

from levibot.ml.card import ModelCard

_COLUMNS = (
    ("auc", "AUC", "{:.3f}"),
    ("log_loss", "logloss", "{:.4f}"),
    ("precision_long", "prec@L", "{:.3f}"),
    ("precision_short", "prec@S", "{:.3f}"),
    ("hit_rate", "hit", "{:.3f}"),
    ("trades", "trades", "{:d}"),
    ("net_return", "net ret", "{:+.3f}"),
)


def _cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def metrics_table(card: ModelCard) -> str:
    """Return per-fold and overall metrics of the model and its baselines as a text table."""
    head = ["fold", "who", *(c[1] for c in _COLUMNS)]
    lines: list[list[str]] = []
    blocks = [(str(f["fold"]), f) for f in card.folds] + [("all", card.metrics)]
    for label, block in blocks:
        for who in ("model", "shuffled", "always_long", "always_flat"):
            if who in block:
                lines.append([label, who, *(_cell(block[who], k, f) for k, _, f in _COLUMNS)])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in lines]
    return "\n".join(out)


def summary(card: ModelCard) -> str:
    """Return a few lines naming the model, its data and its export checks."""
    d, e = card.data, card.export
    return "\n".join(
        [
            f"model     {card.model_id}",
            f"schema    {card.schema_hash} (version {card.schema_version}), "
            f"{len(card.features)} of {card.schema_size} features used",
            f"data      {d.get('source', '')} {d.get('start', '')} → {d.get('end', '')}, "
            f"{d.get('rows', 0)} labelled rows",
            f"label     log return over {card.horizon} bars > 2 × {card.fee_bps:g} bps",
            f"export    onnx max err {e.get('onnx_max_error', float('nan')):.2e}, "
            f"gemm {e.get('gemm_max_error', float('nan')):.2e}, "
            f"gemm fp16 {e.get('gemm_fp16_max_error', float('nan')):.2e}",
        ]
    )

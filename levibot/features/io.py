"""Write a feature matrix as CSV: ``timestamp`` then one column per feature, in schema order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from levibot.features._schema import SCHEMA


def _cell(x: float) -> str:
    # repr is the shortest text that reads back as the same float; NaN (warm-up) is empty.
    return "" if math.isnan(x) else repr(x)


def write_features(
    out: TextIO,
    timestamps: Sequence[int] | npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    names: Sequence[str] = SCHEMA.names,
) -> int:
    """Write ``timestamp,<names...>`` and one line per row to ``out``; return the row count."""
    if values.shape != (len(timestamps), len(names)):
        raise ValueError(f"values must be ({len(timestamps)}, {len(names)}), not {values.shape}")
    out.write(",".join(("timestamp", *names)) + "\n")
    cell = _cell
    for ts, row in zip(np.asarray(timestamps).tolist(), values.tolist(), strict=True):
        out.write(f"{ts},{','.join([cell(x) for x in row])}\n")
    return len(timestamps)


def write_features_csv(
    path: str | Path,
    timestamps: Sequence[int] | npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
) -> int:
    """Write the feature matrix to the CSV file at ``path``; return the row count."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        return write_features(fh, timestamps, values)

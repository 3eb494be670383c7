"""The batch path: the feature matrix of whole arrays, for training and the CLI.

It runs the incremental kernel over the rows, so training and serving compute every number
the same way, by construction (a test checks the equality bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import numpy.typing as npt

from levibot.features._schema import NAMES
from levibot.features._state import NAN_ROW, FeatureState

F64 = npt.NDArray[np.float64]


class BatchResult:
    """The feature matrix of a batch run and how many rows were refused, by reason."""

    __slots__ = ("out_of_order", "rejected", "values")

    def __init__(self, values: F64, rejected: int, out_of_order: int) -> None:
        self.values = values
        self.rejected = rejected
        self.out_of_order = out_of_order


def run_batch(
    open: Sequence[float] | F64,
    high: Sequence[float] | F64,
    low: Sequence[float] | F64,
    close: Sequence[float] | F64,
    volume: Sequence[float] | F64,
    ts: Sequence[int] | npt.NDArray[np.int64] | None = None,
    state: FeatureState | None = None,
) -> BatchResult:
    """Return the feature matrix and the refused-row counts (see ``compute_batch``)."""
    columns = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, volume)]
    n = columns[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in columns):
        raise ValueError("open, high, low, close and volume must be 1-d arrays of one length")
    state = FeatureState() if state is None else state
    update = state.update
    rejected_before = state.rejected
    o, h, lo, c, v = (a.tolist() for a in columns)
    if ts is None:
        rows = [update(*bar) for bar in zip(o, h, lo, c, v, strict=True)]
        out_of_order = 0
    else:
        times = np.asarray(ts, dtype=np.int64)
        if times.shape != (n,):
            raise ValueError("ts must be a 1-d array as long as the prices")
        rows = []
        out_of_order = 0
        last: int | None = None
        for t, bar in zip(times.tolist(), zip(o, h, lo, c, v, strict=True), strict=True):
            if last is not None and t <= last:
                # Same rule as the feature actor: an older or repeated bar is dropped.
                out_of_order += 1
                rows.append(NAN_ROW)
                continue
            before = state.rejected
            rows.append(update(*bar))
            if state.rejected == before:
                last = t
    width = len(NAMES)
    values = np.fromiter(chain.from_iterable(rows), np.float64, count=n * width).reshape(n, width)
    return BatchResult(values, state.rejected - rejected_before, out_of_order)


def compute_batch(
    open: Sequence[float] | F64,
    high: Sequence[float] | F64,
    low: Sequence[float] | F64,
    close: Sequence[float] | F64,
    volume: Sequence[float] | F64,
    ts: Sequence[int] | npt.NDArray[np.int64] | None = None,
) -> F64:
    """Return the (n, len(SCHEMA.names)) feature matrix of OHLCV arrays, NaN during warm-up.

    Row ``i`` is exactly what ``FeatureState.update`` returns for bar ``i`` when fed the bars
    in order. A rejected bar (see ``FeatureState``) gives an all-NaN row. With ``ts`` (bar
    times, any monotonic unit), a bar not newer than the last accepted one is dropped like
    the feature actor drops it, and gives an all-NaN row too.
    """
    return run_batch(open, high, low, close, volume, ts).values

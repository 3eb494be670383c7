"""Model governance: the promotion gate, live metrics on realised outcomes, canary rollback.

- **Promotion gate** (``promotion``): a model may be activated only when its out-of-sample net
  return (walk-forward folds, fees included) beats every naive baseline on the same rows:
  always-flat, always-long and, when trained, the same model on shuffled labels. The verdict
  and its reasons are written into the card at training; activation refuses a failed (or
  unjudged) card unless forced.
- **Live metrics** (``OutcomeTracker``): a served probability becomes a labelled row once its
  label matures, ``horizon`` bars later, with the training label's definition
  (``log(close[t+H] / close[t]) > 2 · fee``). AUC, log loss and hit rate are kept over a
  sliding window of matured rows, per key (a role, or the active model on the canary's rows).
- **Canary rollback** (``canary_verdict``): the canary and the active model are both scored on
  the canary's rows, so their live metrics compare like with like; once enough rows matured,
  a canary whose log loss exceeds the active model's by more than a margin, or whose AUC falls
  short of it by more than a margin, is rolled back.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from levibot.errors import LevibotError
from levibot.ml.card import ModelCard
from levibot.ml.evaluate import auc, log_loss

#: The baselines a model must beat, in the card's ``baselines`` (and ``shuffled`` if trained).
BASELINES = ("always_flat", "always_long", "shuffled")


class PromotionRefused(LevibotError):
    """The model did not pass the promotion gate (activate it with force to override)."""


@dataclass(frozen=True, slots=True)
class Promotion:
    """The promotion gate's verdict on a card."""

    passed: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        """Return the verdict as the card stores it."""
        return {"passed": self.passed, "why": self.why}


def promotion(metrics: dict[str, Any], baselines: dict[str, Any]) -> Promotion:
    """Judge out-of-sample ``metrics`` against ``baselines`` (net returns, fees included)."""
    model = metrics.get("model", {}).get("net_return")
    if not isinstance(model, int | float) or not math.isfinite(model):
        return Promotion(False, "no out-of-sample net return to judge")
    beaten: list[str] = []
    lost: list[str] = []
    for name in BASELINES:
        value = baselines.get(name, {}).get("net_return")
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        (beaten if model > value else lost).append(f"{name} {value:+.4f}")
    if not beaten and not lost:
        return Promotion(False, "no baseline to compare with")
    head = f"out-of-sample net return {model:+.4f}"
    if lost:
        return Promotion(False, f"{head} does not beat {', '.join(lost)}")
    return Promotion(True, f"{head} beats {', '.join(beaten)}")


def check_promotion(card: ModelCard, *, force: bool = False) -> None:
    """Raise ``PromotionRefused`` unless ``card`` passed the gate (or ``force``)."""
    if force:
        return
    verdict = card.promotion or promotion(card.metrics, card.baselines).as_dict()
    if not verdict.get("passed"):
        raise PromotionRefused(
            f"model {card.model_id} is not promoted: {verdict.get('why', 'not judged')}; "
            "activate it with force to override"
        )


class LiveMetrics:
    """AUC, log loss and hit rate over the last ``window`` matured rows."""

    def __init__(self, window: int = 2_000, long_threshold: float = 0.55) -> None:
        self.p: deque[float] = deque(maxlen=window)
        self.y: deque[int] = deque(maxlen=window)
        self.long_threshold = long_threshold
        self.total = 0

    def add(self, p: float, y: int) -> None:
        """Record one matured row: the probability served and the realised label."""
        self.p.append(p)
        self.y.append(y)
        self.total += 1

    @property
    def rows(self) -> int:
        """Return how many rows the window holds."""
        return len(self.p)

    def summary(self) -> dict[str, float]:
        """Return ``auc``, ``log_loss`` and ``hit_rate`` (NaN where undefined)."""
        if not self.p:
            return {"auc": math.nan, "log_loss": math.nan, "hit_rate": math.nan}
        p, y = np.asarray(self.p), np.asarray(self.y)
        said_long = p >= self.long_threshold
        return {
            "auc": float(auc(y, p)),
            "log_loss": float(log_loss(y, p)),
            "hit_rate": float(np.mean(said_long == (y == 1))),
        }


class OutcomeTracker:
    """Turn served probabilities into labelled rows when their label matures.

    ``observe`` takes each scored row of a symbol in bar order with the bar's close and the
    probabilities served for it (by key); ``horizon`` rows later the label is known and every
    key's ``LiveMetrics`` gets the row. Rows are counted per symbol as they arrive: a gap in
    the feed stretches a label's horizon (training drops such rows instead).
    """

    def __init__(self, *, horizon: int, fee_bps: float, window: int = 2_000) -> None:
        self.horizon = horizon
        self.cost = 2.0 * fee_bps / 1e4
        self.window = window
        self.metrics: dict[str, LiveMetrics] = {}
        self._pending: dict[str, deque[tuple[float, dict[str, float]]]] = {}

    def observe(self, symbol: str, close: float, served: dict[str, float]) -> list[str]:
        """Record a row; return the keys whose metrics got a matured row."""
        queue = self._pending.setdefault(symbol, deque())
        queue.append((close, served))
        if len(queue) <= self.horizon:
            return []
        then, probabilities = queue.popleft()
        if not (then > 0 and close > 0):
            return []
        y = int(math.log(close / then) > self.cost)
        for key, p in probabilities.items():
            live = self.metrics.get(key)
            if live is None:
                live = self.metrics[key] = LiveMetrics(self.window)
            live.add(p, y)
        return list(probabilities)

    def forget(self, key: str) -> None:
        """Drop ``key``'s metrics and its pending rows (a model left its slot)."""
        self.metrics.pop(key, None)
        for queue in self._pending.values():
            for _, probabilities in queue:
                probabilities.pop(key, None)


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """When a canary is rolled back: after ``min_rows`` matured rows, if it is worse."""

    min_rows: int = 500
    max_log_loss_excess: float = 0.02
    max_auc_shortfall: float = 0.05


def canary_verdict(
    canary: LiveMetrics | None, active: LiveMetrics | None, policy: CanaryPolicy
) -> str | None:
    """Return why the canary must be rolled back, or None while it holds (or is unjudged)."""
    if canary is None or active is None or min(canary.rows, active.rows) < policy.min_rows:
        return None
    c, a = canary.summary(), active.summary()
    excess = c["log_loss"] - a["log_loss"]
    if excess > policy.max_log_loss_excess:
        return (
            f"live log loss {c['log_loss']:.4f} exceeds the active model's {a['log_loss']:.4f}"
            f" on the same {canary.rows} rows by more than {policy.max_log_loss_excess}"
        )
    shortfall = a["auc"] - c["auc"]
    if shortfall > policy.max_auc_shortfall:
        return (
            f"live AUC {c['auc']:.4f} is below the active model's {a['auc']:.4f}"
            f" on the same {canary.rows} rows by more than {policy.max_auc_shortfall}"
        )
    return None

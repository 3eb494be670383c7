"""Serving models: the active, shadow and canary slots, routing, batching and monitoring.

Plain synchronous code (no event loop, no bus): the scoring actor hands it a batch of full
feature vectors and gets back probabilities, the model that produced each, and the alerts to
raise. Rows with a NaN in the model's columns (warm-up) are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from levibot.ml.card import ModelCard
from levibot.ml.monitor import DriftMonitor, ShadowStats, in_canary
from levibot.ml.scorer import Scorer


@dataclass(frozen=True)
class ServingPolicy:
    """How models are served: batch size, thresholds, canary share, expiry and drift."""

    max_batch: int = 256
    long_threshold: float = 0.55
    short_threshold: float = 0.45
    allow_short: bool = False
    canary_fraction: float = 0.0
    max_model_age_s: float = 0.0
    drift_tolerance: float = 0.1
    drift_window: int = 500
    drift_max_fraction: float = 0.05


_NO_ROWS = np.empty(0)


class Served:
    """A loaded model with its own drift monitor and expiry flag."""

    def __init__(self, scorer: Scorer, policy: ServingPolicy) -> None:
        self.scorer = scorer
        self.card: ModelCard = scorer.card
        self.drift = DriftMonitor(
            scorer.card,
            tolerance=policy.drift_tolerance,
            window=policy.drift_window,
            max_fraction=policy.drift_max_fraction,
        )
        self.expiry_alerted = False


@dataclass
class Scored:
    """One batch's outcome. ``p[i]`` is NaN where row ``i`` was not scored."""

    p: np.ndarray
    model_ids: list[str]
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (code, text)
    runs: list[int] = field(default_factory=list)  # rows per ONNX run
    skipped: int = 0
    # The shadow's score of every row, and the active model's score of the canary's rows (so
    # the two compare on the same rows); NaN elsewhere. None when there is no such model.
    shadow_p: np.ndarray | None = None
    active_on_canary: np.ndarray | None = None
    # Why the canary must go at once: its drift or expiry alert fired, or it failed to score.
    canary_faults: list[str] = field(default_factory=list)


class ModelSet:
    """The active model, and optionally a shadow (compared, never served) and a canary (serves
    the symbols in its stable-hash bucket)."""

    def __init__(self, policy: ServingPolicy) -> None:
        self.policy = policy
        self.active: Served | None = None
        self.shadow: Served | None = None
        self.canary: Served | None = None
        self.shadow_stats = ShadowStats()
        self._last: tuple[Served, np.ndarray] | None = None  # the active model's last inputs

    def set(self, role: str, served: Served | None) -> None:
        """Put ``served`` in slot ``role`` (active, shadow or canary); None empties it."""
        if role not in ("active", "shadow", "canary"):
            raise ValueError(f"unknown model role {role!r}")
        setattr(self, role, served)
        if role == "shadow":
            self.shadow_stats = ShadowStats()

    def warm(self) -> None:
        """Run the active model's hot path on the last rows it scored, changing nothing.

        Keeps the model's code and data in the CPU caches while no message comes (the node's
        ``idle = "spin"``): no drift or shadow update, no alert, the result is thrown away.
        """
        last = self._last
        if last is None or last[0] is not self.active:
            return
        served, x = last
        served.scorer.predict_selected(x)
        served.drift.out_of_range(x)

    def _sides(self, p: np.ndarray) -> np.ndarray:
        pol = self.policy
        short = -1 if pol.allow_short else 0
        return np.where(p >= pol.long_threshold, 1, np.where(p <= pol.short_threshold, short, 0))

    def score(self, rows: np.ndarray, symbols: list[str], now_ns: int) -> Scored:
        """Score full feature vectors ``rows`` (n, k) of ``symbols`` at time ``now_ns``."""
        n = len(rows)
        active = self.active
        if active is None:
            out = Scored(p=np.full(n, np.nan), model_ids=[""] * n)
            out.skipped = n
            return out
        canary, frac = self.canary, self.policy.canary_fraction
        if canary is None or frac <= 0.0:  # every row is the active model's (the usual case)
            out = Scored(p=_NO_ROWS, model_ids=[active.card.model_id] * n)
            out.p = self._predict(active, rows, now_ns, out)
        else:
            out = Scored(p=np.full(n, np.nan), model_ids=[""] * n)
            groups: dict[int, tuple[Served, list[int]]] = {}
            for i, sym in enumerate(symbols):
                served = canary if in_canary(sym, frac) else active
                groups.setdefault(id(served), (served, []))[1].append(i)
            for served, idx in groups.values():
                sel = np.asarray(idx)
                if served is canary:
                    self._score_canary(served, sel, rows, now_ns, out)
                    continue
                out.p[sel] = self._predict(served, rows[sel], now_ns, out)
                for j in idx:
                    out.model_ids[j] = served.card.model_id
        if self.shadow is not None:
            shadow_out = Scored(p=np.full(n, np.nan), model_ids=[])
            ps = self._predict(self.shadow, rows, now_ns, shadow_out)
            out.alerts += shadow_out.alerts
            out.shadow_p = ps
            ok = ~(np.isnan(ps) | np.isnan(out.p))
            if ok.any():
                self.shadow_stats.update(
                    self._sides(out.p[ok]), self._sides(ps[ok]), out.p[ok] - ps[ok]
                )
        return out

    def _score_canary(
        self, canary: Served, sel: np.ndarray, rows: np.ndarray, now_ns: int, out: Scored
    ) -> None:
        """Score the canary's rows with the canary and, for comparison, the active model.

        A canary that fails to score, or whose own drift or expiry alert fires, is reported in
        ``canary_faults`` for rollback; if it failed, its rows get the active model's scores.
        """
        active = self.active
        assert active is not None  # a canary row exists only beside an active model
        base = np.full(len(out.p), np.nan)
        base[sel] = self._predict(active, rows[sel], now_ns, out)
        out.active_on_canary = base
        mine = Scored(p=np.full(len(sel), np.nan), model_ids=[])
        try:
            p = self._predict(canary, rows[sel], now_ns, mine)
        except Exception as exc:  # a broken candidate must not take its symbols down with it
            out.canary_faults.append(f"scoring failed: {type(exc).__name__}: {exc}")
            out.p[sel] = base[sel]
            for j in sel.tolist():
                out.model_ids[j] = active.card.model_id
            return
        out.alerts += mine.alerts
        out.runs += mine.runs
        out.canary_faults += [f"{code}: {text}" for code, text in mine.alerts]
        out.p[sel] = p
        for j in sel.tolist():
            out.model_ids[j] = canary.card.model_id

    def _predict(self, served: Served, rows: np.ndarray, now_ns: int, out: Scored) -> np.ndarray:
        """Return the scores of ``rows`` (NaN for a row with a NaN in the model's columns) and
        monitor the scored rows; the model's columns are selected once, for both."""
        x = served.scorer.columns_of(rows)
        idx: np.ndarray | None = None
        # A NaN anywhere makes the sum NaN (so can +inf and -inf: then the exact test finds none).
        if np.isnan(x.sum()):
            waiting = np.isnan(x).any(axis=1)
            idx = np.flatnonzero(~waiting)  # warm-up rows: score the others
            out.skipped += len(rows) - len(idx)
            x = x[idx]
        m = len(x)
        step = self.policy.max_batch
        if m <= step:  # one run (the live path: a row or a few)
            scores = served.scorer.predict_selected(x) if m else np.empty(0)
            if m:
                out.runs.append(m)
        else:
            scores = np.empty(m)
            for lo in range(0, m, step):
                part = x[lo : lo + step]
                scores[lo : lo + step] = served.scorer.predict_selected(part)
                out.runs.append(len(part))
        if m:
            self._monitor(served, x, now_ns, out)
            if served is self.active:
                self._last = (served, x[-1:])
        if idx is None:
            return scores
        p = np.full(len(rows), np.nan)
        p[idx] = scores
        return p

    def _monitor(self, served: Served, x: np.ndarray, now_ns: int, out: Scored) -> None:
        card = served.card
        if served.drift.update(x, card.features):
            out.alerts.append(
                (
                    "model.input_drift",
                    f"model {card.model_id}: {served.drift.fraction:.1%} of the last "
                    f"{served.drift.window} rows are outside the training range "
                    f"(most often {served.drift.worst})",
                )
            )
        max_age = self.policy.max_model_age_s
        age = (now_ns - card.created_at_ns) / 1e9
        if max_age > 0 and not served.expiry_alerted and age > max_age:
            served.expiry_alerted = True
            out.alerts.append(
                (
                    "model.expired",
                    f"model {card.model_id} is {age / 86400:.1f} days old "
                    f"(limit {max_age / 86400:.1f}); retrain it",
                )
            )

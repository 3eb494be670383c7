"""``LiveWatch``: the served models scored against realised outcomes, batch after batch.

The scoring actor hands it each scored batch (symbols, bar closes, ``Scored``); it keys every
served probability by role (``active``, ``canary``, ``shadow``, and ``active@canary``: the
active model's score of the canary's rows, so the two compare on the same rows), follows the
active model's label definition (``OutcomeTracker``), and every ``every`` matured rows says it
is time to publish the live metrics and judge the canary (``canary_verdict``). Pure: no bus.
"""

from __future__ import annotations

from collections.abc import Sequence

from levibot.ml.card import ModelCard
from levibot.ml.governance import CanaryPolicy, OutcomeTracker, canary_verdict
from levibot.ml.serving import Scored

__all__ = ["LiveWatch"]


class LiveWatch:
    """Live metrics per role over the rows whose labels matured; the canary's verdict."""

    def __init__(self, *, window: int, policy: CanaryPolicy, every: int = 100) -> None:
        self.window = window
        self.policy = policy
        self.every = every
        self.tracker: OutcomeTracker | None = None
        self._follows = ""  # the active model whose label definition the tracker uses
        self._matured = 0

    def observe(
        self,
        active: ModelCard,
        canary_id: str | None,
        symbols: Sequence[str],
        closes: Sequence[float],
        scored: Scored,
    ) -> bool:
        """Record a scored batch; return True when the metrics are due to be published."""
        tracker = self.tracker
        if tracker is None or self._follows != active.model_id:
            tracker = self.tracker = OutcomeTracker(
                horizon=active.horizon, fee_bps=active.fee_bps, window=self.window
            )
            self._follows, self._matured = active.model_id, 0
        base, shadow = scored.active_on_canary, scored.shadow_p
        for i, symbol in enumerate(symbols):
            p = float(scored.p[i])
            if p != p:
                continue  # not scored (warm-up)
            served: dict[str, float] = {}
            if canary_id is not None and scored.model_ids[i] == canary_id:
                served["canary"] = p
                if base is not None and base[i] == base[i]:
                    served["active@canary"] = float(base[i])
            else:
                served["active"] = p
            if shadow is not None and shadow[i] == shadow[i]:
                served["shadow"] = float(shadow[i])
            if tracker.observe(symbol, closes[i], served):
                self._matured += 1
        if self._matured < self.every:
            return False
        self._matured = 0
        return True

    def summaries(self) -> dict[str, dict[str, float]]:
        """Return each role's live metrics and window size."""
        if self.tracker is None:
            return {}
        return {
            role: {**live.summary(), "rows": float(live.rows)}
            for role, live in self.tracker.metrics.items()
        }

    def canary_verdict(self) -> str | None:
        """Return why the canary must be rolled back, or None."""
        if self.tracker is None:
            return None
        m = self.tracker.metrics
        return canary_verdict(m.get("canary"), m.get("active@canary"), self.policy)

    def forget_canary(self) -> None:
        """Drop the canary's rows (it left its slot)."""
        if self.tracker is not None:
            self.tracker.forget("canary")
            self.tracker.forget("active@canary")

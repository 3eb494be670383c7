"""Strategies the scoring actor hosts: the ONNX model and rule strategies.

Rule strategies keep per-symbol state and emit only when their side changes (a crossing), not
every bar; the ``onnx`` strategy scores every bar (its probability is news every bar).
"""

from levibot.strategies.base import Decision, RuleStrategy, side_for
from levibot.strategies.rules import EmaCross, RsiMacd, crossed

#: Every strategy name the scoring actor knows.
STRATEGIES: tuple[str, ...] = ("onnx", "ema_cross", "rsi_macd")

__all__ = ["STRATEGIES", "Decision", "EmaCross", "RsiMacd", "RuleStrategy", "crossed", "side_for"]

"""Strategies the scoring actor hosts: the ONNX model and rule strategies.

Rule strategies keep per-symbol indicators of their own (any periods), read closed bars, warm
up only as long as their indicators need, and emit only when their side changes (a crossing),
not every bar; the ``onnx`` strategy scores every bar's feature vector (its probability is
news every bar) and so waits for the whole feature schema.
"""

from levibot.strategies.base import Decision, RuleParams, RuleStrategy, side_for
from levibot.strategies.host import RuleDecision, RuleHost
from levibot.strategies.rules import (
    RULES,
    EmaCross,
    EmaCrossParams,
    RsiMacd,
    RsiMacdParams,
    crossed,
    make_rule,
    rule_params,
)

#: Every strategy name the scoring actor knows.
STRATEGIES: tuple[str, ...] = ("onnx", *RULES)

__all__ = [
    "RULES",
    "STRATEGIES",
    "Decision",
    "EmaCross",
    "EmaCrossParams",
    "RsiMacd",
    "RsiMacdParams",
    "RuleDecision",
    "RuleHost",
    "RuleParams",
    "RuleStrategy",
    "crossed",
    "make_rule",
    "rule_params",
    "side_for",
]

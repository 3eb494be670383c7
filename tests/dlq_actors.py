"""The real risk actor with one deterministic poison: it raises on a ``SubmitOrder`` for
``POISONUSDT``. Everything else goes through ``RiskActor`` unchanged (same crash policy, same
engine, same state). Loaded by nodes through ``[node] plugins = ["tests.dlq_actors"]``.
"""

from __future__ import annotations

from levibot.actors.risk import RiskActor, RiskIn
from levibot.messages import SubmitOrder
from levibot.registry import register

POISON = "POISONUSDT"


class PoisonRisk(RiskActor):
    """``RiskActor`` that refuses one symbol by raising, as a handler bug would."""

    name = "poison_risk"

    async def handle(self, msg: RiskIn) -> None:
        if isinstance(msg, SubmitOrder) and msg.symbol == POISON:
            raise ValueError(f"poison order {msg.command_id}")
        await super().handle(msg)


register(PoisonRisk.name, f"{__name__}:PoisonRisk")

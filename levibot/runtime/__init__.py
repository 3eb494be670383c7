"""The actor runtime: actors, their contexts, supervision, nodes."""

from levibot.runtime.actor import (
    Actor,
    ActorContext,
    EmptyConfig,
    Partition,
    Policy,
    SourceActor,
    Supervision,
)
from levibot.runtime.metrics import Metrics

__all__ = [
    "Actor",
    "ActorContext",
    "EmptyConfig",
    "Metrics",
    "Partition",
    "Policy",
    "SourceActor",
    "Supervision",
]

"""The actor runtime: actors, their contexts, supervision, nodes."""

from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.runtime.actor import (
    Actor,
    ActorContext,
    EmptyConfig,
    Policy,
    SourceActor,
    Supervision,
)

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

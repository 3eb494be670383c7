"""The actor registry: every actor a node can run, by name, imported only when used.

It sits at the bottom of the package (settings validates actor sections through it, the
runtime builds nodes through it) and names actors by ``"module:Class"`` strings, so no layer
below the actors imports them.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name → "module:Class". Names are what ``[groups]`` in config.toml lists.
REGISTRY: dict[str, str] = {
    "feed": "levibot.actors.feed:FeedActor",
    "feature": "levibot.actors.feature:FeatureActor",
    "scoring": "levibot.actors.scoring:ScoringActor",
    "risk": "levibot.actors.risk:RiskActor",
    "order": "levibot.actors.order:OrderActor",
    "store": "levibot.actors.store:StoreActor",
    "gateway": "sidecars.gateway.actor:GatewayActor",
    "telegram": "sidecars.telegram.actor:TelegramActor",
}


def register(name: str, target: str) -> None:
    """Register an actor class (``"module:Class"``) under ``name``; plugins call this."""
    existing = REGISTRY.get(name)
    if existing is not None and existing != target:
        raise ValueError(f"actor {name!r} is already registered as {existing}")
    REGISTRY[name] = target


def resolve(name: str) -> Any:
    """Return the actor class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown actor {name!r}; known actors: {known}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)

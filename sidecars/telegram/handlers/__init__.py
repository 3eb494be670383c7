"""The bot's handlers: one aiogram router per feature, composed by ``build_router``."""

from __future__ import annotations

from aiogram import Router

from sidecars.telegram.handlers import admin, fallback, following, reports, welcome
from sidecars.telegram.handlers.common import SHARED_SENDER_IDS, BotDeps

__all__ = ["SHARED_SENDER_IDS", "BotDeps", "build_router"]


def build_router() -> Router:
    """Return a root router holding every feature's router, the fallback last.

    aiogram tries routers in the order they were included, so ``fallback`` (unknown
    commands, plain text, unexpected errors) only sees what no feature took. Handlers get
    their dependencies from the dispatcher's workflow data: ``dp["deps"] = BotDeps(...)``.
    """
    root = Router(name="levibot")
    for feature in (welcome, following, reports, admin, fallback):
        root.include_router(feature.router())
    return root

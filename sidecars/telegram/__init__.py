"""The Telegram sidecar: an aiogram 3 bot as an actor (commands, pushes, admin commands)."""

from sidecars.telegram.actor import TelegramActor, TelegramConfig

__all__ = ["TelegramActor", "TelegramConfig"]

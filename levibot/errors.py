"""levibot's errors: each says what went wrong in words a user can act on."""

from __future__ import annotations


class LevibotError(Exception):
    """Base of every error levibot raises on purpose."""


class ConfigError(LevibotError):
    """The configuration is invalid; ``path`` names the offending field (``$.nats.url``)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class DecodeError(LevibotError):
    """A message from the wire is malformed or of an unknown type."""


class SchemaMismatchError(LevibotError):
    """A model was trained on a different feature schema than the one running."""


class SupervisionExhausted(LevibotError):
    """An actor failed more often than its restart budget allows; the node must exit."""

    def __init__(self, actor: str, cause: BaseException | None = None) -> None:
        super().__init__(f"actor {actor!r} exhausted its supervision budget: {cause!r}")
        self.actor = actor

"""levibot's errors: each says what went wrong in words a user can act on.

Each error carries the process exit code the command line ends with (``sysexits.h`` where one
fits):

====  ==============================================================================
code  meaning
====  ==============================================================================
2     the configuration or the command line is invalid
65    a data file is malformed (EX_DATAERR)
66    a file to read is missing or unreadable: config, data, model (EX_NOINPUT)
69    a server is unreachable: NATS, PostgreSQL, Redis (EX_UNAVAILABLE)
70    an actor crashed, failed to start or exhausted its restart budget (EX_SOFTWARE)
73    a port to listen on is in use or not allowed (EX_CANTCREAT)
130   a second SIGINT/SIGTERM cancelled the drain
====  ==============================================================================
"""

from __future__ import annotations

from typing import ClassVar

EXIT_CONFIG = 2
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_UNAVAILABLE = 69
EXIT_SOFTWARE = 70
EXIT_CANTCREAT = 73
EXIT_CANCELLED = 130

#: The exit codes of ``levibot run``, as documented in the README and ``levibot run --help``.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "stopped cleanly"),
    (EXIT_CONFIG, "invalid configuration or command line"),
    (EXIT_DATAERR, "a data file is malformed"),
    (EXIT_NOINPUT, "a file to read is missing or unreadable (config, data, model)"),
    (EXIT_UNAVAILABLE, "a server is unreachable (NATS, PostgreSQL, Redis)"),
    (EXIT_SOFTWARE, "an actor crashed, failed to start or exhausted its restart budget"),
    (EXIT_CANTCREAT, "a port to listen on is in use or not allowed"),
    (EXIT_CANCELLED, "a second signal cancelled the drain"),
)


class LevibotError(Exception):
    """Base of every error levibot raises on purpose."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class ConfigError(LevibotError):
    """The configuration is invalid; ``path`` names the offending field (``$.nats.url``)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ConfigFileError(ConfigError):
    """The config file is missing or cannot be read."""

    exit_code = EXIT_NOINPUT


class DecodeError(LevibotError):
    """A message from the wire is malformed or of an unknown type."""


class SchemaMismatchError(LevibotError):
    """A model was trained on a different feature schema than the one running."""


class SupervisionExhausted(LevibotError):
    """An actor failed more often than its restart budget allows; the node must exit."""

    exit_code = EXIT_SOFTWARE

    def __init__(self, actor: str, cause: BaseException | None = None) -> None:
        super().__init__(f"actor {actor!r} exhausted its supervision budget: {cause!r}")
        self.actor = actor


class StartupError(LevibotError):
    """A node cannot start; ``where`` names the configuration it came from (``[node] http``).

    The message is one line: what failed, why, and where.
    """

    exit_code = EXIT_SOFTWARE

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{message} ({where})" if where else message)
        self.where = where


class DataError(StartupError):
    """A data file the node reads is malformed."""

    exit_code = EXIT_DATAERR


class InputError(StartupError):
    """A file the node must read (data, a model, the registry) is missing or unreadable."""

    exit_code = EXIT_NOINPUT


class UnavailableError(StartupError):
    """A server the node needs (NATS, PostgreSQL, Redis) cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


class ListenError(StartupError):
    """The node cannot listen on a configured address (in use, not allowed, not local)."""

    exit_code = EXIT_CANTCREAT


def root_cause(exc: BaseException) -> BaseException:
    """Return the first real exception inside (nested) exception groups, or ``exc``."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = exc.exceptions
        exc = next((e for e in leaves if isinstance(e, Exception)), leaves[0])
    return exc

"""Structured logs: JSON lines in production, a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once per process."""
    console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        # Plain tracebacks: the default "rich" ones print local variables (they can hold
        # secrets: DSNs with passwords, tokens).
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=True, exception_formatter=structlog.dev.plain_traceback
            )
        )
    else:
        # Tracebacks as plain structured dicts, without local variables (they can hold secrets).
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**bind: Any) -> Any:
    """Return a logger bound to ``bind``."""
    return structlog.get_logger().bind(**bind)

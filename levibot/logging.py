"""Structured logs: JSON lines in production, a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from levibot.secrets import mask_event


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once per process."""
    console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks are rendered to text or dicts first, without local variables (they can hold
    # secrets: DSNs with passwords, tokens); then every string is masked (levibot.secrets),
    # the traceback's text included, so no credential reaches a log line.
    if console:
        processors += [
            structlog.processors.format_exc_info,
            mask_event,
            structlog.dev.ConsoleRenderer(colors=True),
        ]
    else:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            mask_event,
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

"""The ``levibot`` command: sub-commands are discovered in ``levibot.commands``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import levibot
import levibot.commands
from levibot.errors import EXIT_CANCELLED, LevibotError, root_cause


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="levibot", description="A low-latency crypto trading-signal engine."
    )
    parser.add_argument("--version", action="version", version=f"levibot {levibot.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(levibot.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"levibot.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (LevibotError, KeyboardInterrupt, BrokenPipeError, BaseExceptionGroup) as exc:
        return _failed(exc)


def _failed(exc: BaseException) -> int:
    """Print the one line that says what failed and return the exit code it documents."""
    cause = root_cause(exc)  # an exception group from a task group: what is inside counts
    if isinstance(cause, LevibotError):
        print(f"levibot: error: {cause}", file=sys.stderr)
        return cause.exit_code
    if isinstance(cause, KeyboardInterrupt):
        return EXIT_CANCELLED
    if isinstance(cause, BrokenPipeError):  # `levibot data gaps ... | head`
        sys.stderr.close()
        return 0
    raise cause from exc  # a bug: its own traceback is what a report needs


if __name__ == "__main__":
    sys.exit(main())

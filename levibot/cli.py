"""The ``levibot`` command: sub-commands are discovered in ``levibot.commands``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import levibot
import levibot.commands
from levibot.errors import LevibotError


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
    except LevibotError as exc:
        print(f"levibot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `levibot data gaps ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

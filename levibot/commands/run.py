"""``levibot run``: run some (by default all) actor groups in this process."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from levibot.errors import EXIT_CODES, LevibotError
from levibot.settings import load_settings


def exit_codes_epilog() -> str:
    """Return the table of exit codes, for ``--help``."""
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return (
        "exit codes:\n" + rows + "\n\n"
        "A failure to start ends with one line on stderr, e.g.\n"
        "  levibot: error: cannot listen on 127.0.0.1:9100: address already in use "
        "([node] http_port)\n"
        '(the traceback is logged at [log] level = "debug").'
    )


def add_common(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` (default: ./config.toml when it exists, else built-in defaults)."""
    parser.add_argument(
        "--config", metavar="PATH", default=None, help="config file (default: ./config.toml)"
    )


def config_path(args: argparse.Namespace) -> str | None:
    """Return the config file to load: ``--config``, ``$LEVIBOT_CONFIG`` or ./config.toml."""
    path = args.config or os.environ.get("LEVIBOT_CONFIG")
    if path is None and os.path.exists("config.toml"):
        path = "config.toml"
    return path


def register(sub: Any) -> None:
    """Register ``levibot run``."""
    p = sub.add_parser(
        "run",
        help="run actor groups (all of the node's groups by default)",
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--groups", help="comma-separated groups to run, e.g. ingest,scoring")
    p.add_argument("--partition", metavar="I/N", help="this replica's partition, e.g. 0/2")
    p.add_argument(
        "--no-status", action="store_true", help="no live status line on a terminal (logs only)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the settings and run a node until it is stopped."""
    overrides: dict[str, dict[str, Any]] = {"node": {}}
    if args.groups:
        overrides["node"]["groups"] = [g.strip() for g in args.groups.split(",") if g.strip()]
    if args.partition:
        index, _, count = args.partition.partition("/")
        overrides["node"].update(partition_index=int(index), partition_count=int(count))
    settings = load_settings(config_path(args), overrides=overrides)
    return run_node(settings, status=not args.no_status)


def run_node(settings: Any, *, status: bool = False) -> int:
    """Configure logging and run a ``Node`` for ``settings`` on uvloop; return its exit code.

    With ``status`` and stderr a terminal, a live status line (``levibot.statusline``)
    stays at the foot of the terminal while the logs scroll above it; otherwise the logs alone.
    A failure to start is raised as the ``LevibotError`` that says, in one line, what failed
    and where (its class carries the exit code); the traceback is logged at debug level only.
    """
    import anyio

    from levibot.logging import configure, get_logger
    from levibot.runtime.failure import explain, format_traceback
    from levibot.runtime.node import Node

    line = None
    if status:
        from levibot import statusline

        line = statusline.StatusLine() if statusline.wanted() else None

    async def main() -> int:
        node = Node(settings)
        if line is None:
            code = await node.run()
        else:
            line.attach(node)
            async with anyio.create_task_group() as tg:
                tg.start_soon(line.run, node)
                code = await node.run()
                tg.cancel_scope.cancel()
            line.refresh(node, stopped=True)
        if node.failure is not None:
            raise node.failure
        return code

    with line or contextlib.nullcontext():
        # After the line starts: the logger then writes to the stderr it redirects (above it).
        configure(settings.log.level, settings.log.format)
        try:
            return anyio.run(main, backend_options={"use_uvloop": True})
        except LevibotError:
            raise
        except Exception as exc:  # building the node failed: an actor's constructor, a plugin
            get_logger().debug("node.build_failed.traceback", traceback=format_traceback(exc))
            raise explain(exc, component="node", storage=settings.storage) from None

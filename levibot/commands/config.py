"""``levibot config check``: validate a configuration and print it resolved."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from levibot.commands.run import add_common, config_path
from levibot.secrets import mask
from levibot.settings import load_settings


def register(sub: Any) -> None:
    """Register ``levibot config``."""
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate the configuration and print it resolved")
    add_common(check)
    check.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    """Validate; print the resolved settings as JSON with secrets masked."""
    settings = load_settings(config_path(args))
    doc = msgspec.to_builtins(settings)
    for name in settings.actors_of(settings.node.groups):
        doc["actors"].setdefault(name, msgspec.to_builtins(settings.actor_config(name)))
    print(msgspec.json.format(msgspec.json.encode(mask(doc)), indent=2).decode())
    print("config ok")
    return 0

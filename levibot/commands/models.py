"""``levibot models list|show|activate|rollback``: the model registry from the terminal.

The registry is the one every process shares (``levibot.ml.registries.open_registry``): the
PostgreSQL registry when a DSN is given (``--dsn``) or configured (``[storage] postgres_dsn``),
else the local folder. ``activate`` and ``rollback`` move its persisted active pointer, which a
scoring actor reads when it starts, and then, when ``[nats] url`` is configured, send
``ActivateModel`` so that running scoring actors swap live (as the gateway's
``POST /models/activate`` and ``POST /models/rollback`` do).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from pathlib import Path
from typing import Any

from levibot.commands.run import add_common, config_path
from levibot.ml.card import ModelCard


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` sub-command."""
    p = sub.add_parser("models", help="list, show, activate or roll back models")
    p.add_argument(
        "--registry",
        type=Path,
        help="registry folder, or with a DSN its local cache (default <data_dir>/models)",
    )
    p.add_argument(
        "--dsn", default="", help="PostgreSQL DSN (default [storage] postgres_dsn): its registry"
    )
    p.add_argument(
        "--pg-schema", default="", help="PostgreSQL schema (default [storage] postgres_schema)"
    )
    add_common(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="list registered models")
    show = verbs.add_parser("show", help="show a model card and its metrics")
    show.add_argument("model_id", nargs="?", help="default: the active model")
    show.add_argument("--json", action="store_true", help="print the card as JSON")
    act = verbs.add_parser(
        "activate", help="make a model active (schema hash must match, promotion gate passed)"
    )
    act.add_argument("model_id")
    act.add_argument("--force", action="store_true", help="activate despite the promotion gate")
    verbs.add_parser("rollback", help="re-activate the previously active model")
    p.set_defaults(func=run)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _list(cards: list[ModelCard], active: str | None) -> str:
    head = f"  {'model_id':<36} {'created':<20} {'H':>3} {'feat':>4} {'AUC':>6} {'net ret':>8}"
    lines = [head]
    for c in cards:
        m = c.metrics.get("model", {})
        mark = "*" if c.model_id == active else " "
        lines.append(
            f"{mark} {c.model_id:<36} {c.created_at[:19]:<20} {c.horizon:>3} "
            f"{len(c.features):>4} {_fmt(m.get('auc'), '.3f'):>6} "
            f"{_fmt(m.get('net_return'), '+.3f'):>8}"
        )
    return "\n".join(lines)


async def _verb(
    args: argparse.Namespace, root: Path, dsn: str
) -> tuple[list[ModelCard], str | None, Any, str]:
    """Run the verb on the shared registry: (cards, active id, card, where)."""
    from levibot.ml.registries import activate_gated, open_registry

    reg = await open_registry(root, dsn=dsn, schema=args.pg_schema)
    try:
        match args.verb:
            case "list":
                active = await reg.active()
                return await reg.list(), active.model_id if active else None, None, reg.where()
            case "show":
                card = await reg.get(args.model_id) if args.model_id else await reg.active()
                return [], None, card, reg.where()
            case "activate":
                card = await activate_gated(reg, args.model_id, force=args.force)
                return [], None, card, reg.where()
            case _:
                return [], None, await reg.rollback(), reg.where()
    finally:
        await reg.close()


def run(args: argparse.Namespace) -> int:
    """Run one registry verb."""
    from levibot.ml.card import ModelError
    from levibot.ml.report import metrics_table, summary
    from levibot.settings import load_settings

    settings = load_settings(config_path(args))
    root = args.registry or Path(settings.storage.data_dir) / "models"
    dsn = args.dsn or settings.storage.postgres_dsn
    args.pg_schema = args.pg_schema or settings.storage.postgres_schema
    cards, active, card, where = asyncio.run(_verb(args, root, dsn))
    if args.verb == "list":
        print(_list(cards, active) if cards else f"no models in {where}")
        return 0
    if card is None:
        raise ModelError("no active model")
    if args.verb == "show":
        if args.json:
            print(card.to_json().decode())
        else:
            print(summary(card))
            print()
            print(metrics_table(card))
        return 0
    verb = "activated" if args.verb == "activate" else "rolled back to"
    print(f"{verb} {card.model_id}")
    announce(settings, str(card.model_id))
    return 0


def announce(settings: Any, model_id: str) -> None:
    """Tell running nodes over NATS (when configured) to swap to ``model_id`` live."""
    import uuid

    from levibot.bus import publish_once
    from levibot.messages import ActivateModel
    from levibot.secrets import mask_text

    if not settings.nats.url:
        print("no [nats] url: running nodes load the active model at their next start")
        return
    now = time.time_ns()
    cmd = ActivateModel(
        ts_event=now, ts_init=now, command_id=uuid.uuid4().hex, issued_by="cli", model_id=model_id
    )
    try:
        asyncio.run(publish_once(settings.nats, cmd))
    except Exception as exc:  # no node has made the stream yet, or NATS is away
        # The persisted pointer has moved: a node that starts serves the model anyway.
        why = mask_text(f"{type(exc).__name__}: {exc}")
        print(f"could not tell running nodes ({why}); they serve {model_id} at their next start")
        return
    print(f"sent ActivateModel({model_id}) to the running scoring actors")

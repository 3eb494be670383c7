"""``levibot dlq list|show|replay|purge|resend``: the dead-letter stream and the local spill.

Dead letters are durable messages whose handler raised ``[nats] max_deliver`` times (see
``levibot.bus._dlq``). The ID is the entry's sequence in the dead-letter stream, as ``list``
prints it. ``replay`` publishes an entry again on its original subject with a new message id
(so deduplication does not drop it) and removes it from the stream; if it fails again it comes
back as a new entry. ``resend`` re-sends the durable publishes a node spilled to
``<data_dir>/spill`` when NATS refused them (a node also does this itself when it starts).
Everything uses the ``[nats]`` settings (url, namespace) and ``[storage] data_dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec

from levibot.commands.run import add_common, config_path
from levibot.errors import ConfigError, LevibotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``dlq`` sub-command."""
    p = sub.add_parser("dlq", help="list, show, replay or purge dead letters; re-send the spill")
    add_common(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="list the dead letters of this namespace")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    show = verbs.add_parser("show", help="show one dead letter: headers, error, the message")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print it as JSON")
    replay = verbs.add_parser("replay", help="publish dead letters again on their subjects")
    replay.add_argument("ids", type=int, nargs="*", metavar="ID")
    replay.add_argument("--all", action="store_true", help="every dead letter of this namespace")
    verbs.add_parser("purge", help="remove every dead letter of this namespace")
    resend = verbs.add_parser("resend", help="re-send the durable publishes spilled to disk")
    resend.add_argument("--dir", type=Path, help="spill folder (default <data_dir>/spill)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one ``dlq`` verb."""
    from levibot.settings import load_settings

    settings = load_settings(config_path(args))
    if not settings.nats.url:
        raise ConfigError("no [nats] url configured: there is no dead-letter stream", "$.nats.url")
    if args.verb == "replay" and not (args.ids or args.all):
        raise LevibotError("replay needs IDs or --all")
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Any) -> int:
    import nats

    from levibot.bus import _dlq
    from levibot.bus.connect import connect_options

    config = settings.nats
    try:
        nc = await nats.connect(
            config.url,
            connect_timeout=int(max(1, config.connect_timeout_s)),
            allow_reconnect=False,
            **connect_options(config),
        )
    except Exception as exc:
        raise LevibotError(f"cannot reach NATS at {config.url}: {exc!r}") from None
    js = nc.jetstream()
    try:
        match args.verb:
            case "list":
                _print_list(await _dlq.letters(js, config), as_json=args.json)
            case "show":
                dead = await _dlq.letter(js, config, args.id)
                if dead is None:
                    raise LevibotError(f"no dead letter {args.id} in {_dlq.dlq_stream(config)}")
                _print_one(dead, as_json=args.json)
            case "replay":
                ids = [d.seq for d in await _dlq.letters(js, config)] if args.all else args.ids
                for seq in ids:
                    dead = await _dlq.letter(js, config, seq)
                    if dead is None:
                        raise LevibotError(f"no dead letter {seq} in {_dlq.dlq_stream(config)}")
                    msg_id = await _dlq.replay(js, config, dead)
                    print(f"replayed {seq} to {dead.subject} as {msg_id}")
                print(f"{len(ids)} replayed")
            case "purge":
                print(f"purged {await _dlq.purge(js, config)} dead letter(s)")
            case _:
                await _resend(
                    js, config, _spill_files(args.dir or Path(settings.storage.data_dir) / "spill")
                )
    finally:
        await nc.drain()
    return 0


def _spill_files(folder: Path) -> list[Path]:
    """Return the spill files in ``folder`` (``<consumer>.jsonl``; an interrupted resend leaves
    ``<consumer>.jsonl.<ts>.resend`` beside it, re-sent with it)."""
    found = folder.glob("*.jsonl*") if folder.is_dir() else ()
    return sorted({folder / (f.name.split(".jsonl")[0] + ".jsonl") for f in found})


async def _resend(js: Any, config: Any, bases: list[Path]) -> None:
    from levibot.bus import _spill

    timeout = config.connect_timeout_s

    async def publish(subject: str, data: bytes, headers: dict[str, str]) -> None:
        await js.publish(subject, data, timeout=timeout, headers=headers)

    total_sent = total_left = 0
    for path in bases:
        sent, left = await _spill.resend(path, publish)
        total_sent, total_left = total_sent + sent, total_left + left
        print(f"{path}: {sent} re-sent, {left} still refused")
    print(f"{total_sent} re-sent, {total_left} still spilled")


def _decoded(data: bytes) -> Any:
    from levibot.messages import CORE_TYPES, Codec

    try:
        return msgspec.to_builtins(Codec(CORE_TYPES).decode(data))
    except LevibotError:
        try:
            return msgspec.msgpack.decode(data)  # a type this build does not know
        except msgspec.DecodeError:
            return {"undecodable": data.hex()}


def _print_list(dead: list[Any], *, as_json: bool) -> None:
    if as_json:
        for d in dead:
            row = msgspec.structs.asdict(d)
            row.pop("data")
            print(json.dumps(row, sort_keys=True))
        return
    if not dead:
        print("no dead letters")
        return
    print(f"{'id':>6}  {'time':<19}  {'tries':>5}  {'actor':<12}  {'subject':<32}  error")
    for d in dead:
        print(
            f"{d.seq:>6}  {d.time[:19]:<19}  {d.deliveries:>5}  {d.actor:<12}  "
            f"{d.subject:<32}  {d.error[:80]}"
        )


def _print_one(dead: Any, *, as_json: bool) -> None:
    row = msgspec.structs.asdict(dead)
    row["message"] = _decoded(row.pop("data"))
    if as_json:
        print(json.dumps(row, sort_keys=True, default=str))
        return
    for key in ("seq", "time", "subject", "consumer", "actor", "deliveries", "node", "msg_id"):
        print(f"{key:>10}: {row[key]}")
    print(f"{'error':>10}: {row['error']}")
    print(f"{'headers':>10}: {json.dumps(row['headers'], sort_keys=True)}")
    print(f"{'message':>10}: {json.dumps(row['message'], sort_keys=True, default=str)}")

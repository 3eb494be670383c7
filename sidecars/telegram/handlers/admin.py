"""Admin commands: the kill switch, the trading state and order cancels, sent as bus commands;
model activation and rollback.

``IsAdmin`` guards each handler; an admin command that fails the filter falls through to
``refused``, which says why. Nothing changes state here but the model registry's persisted
pointer (``/activate``, ``/rollback``: moved first, so a scorer that starts later serves the
model, then ``ActivateModel`` tells the running ones); the risk engine and the order actor act
on the commands they receive.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message

from levibot.errors import LevibotError
from levibot.messages import (
    CLIENT_ORDER_ID,
    ActivateModel,
    CancelOrder,
    SetKillSwitch,
    SetTradingState,
    TradingState,
)
from levibot.messages import Command as BusCommand
from levibot.secrets import mask_text
from sidecars.telegram.handlers.common import ON_OFF, BotDeps, anonymous, args, reply, user_id
from sidecars.telegram.subscriptions import ALL_SYMBOLS, InvalidSymbolError, normalize_symbol

#: The commands only admins may run.
ADMIN_COMMANDS = ("killswitch", "trading", "cancel", "activate", "rollback")

#: What a model id may look like (``lgbm-h4-20261206T084400-1a2b3c``).
_MODEL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class IsAdmin(Filter):
    """Pass messages that a person listed in ``telegram.admin_user_ids`` signed."""

    async def __call__(self, message: Message, deps: BotDeps) -> bool:
        # A shared sender id (an anonymous admin, a channel) can never be an admin.
        return not anonymous(message) and user_id(message) in deps.admin_user_ids


C = TypeVar("C", bound=BusCommand)


async def _send(kind: type[C], message: Message, deps: BotDeps, **fields: Any) -> C:
    """Stamp a ``kind`` command as this sender's, publish it for its actor and log it."""
    now = deps.now_ns()
    cmd = kind(
        ts_event=now,
        ts_init=now,
        command_id=uuid.uuid4().hex,
        issued_by=f"telegram:{user_id(message)}",
        **fields,
    )
    await deps.publish(cmd)
    deps.log.info("telegram.command", command=kind.__name__, issued_by=cmd.issued_by)
    return cmd


async def killswitch(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = [a.lower() for a in args(command)]
    if len(words) != 1 or words[0] not in ON_OFF:
        await reply(message, deps, "Usage: /killswitch on|off")
        return
    on = ON_OFF[words[0]]
    cmd = await _send(SetKillSwitch, message, deps, on=on)
    what = "ON: the risk engine will deny every new order" if on else "OFF: trading resumes"
    await reply(message, deps, f"Kill switch {what}. Command {cmd.command_id[:8]} sent; see /risk.")


async def trading(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = [a.lower() for a in args(command)]
    states = "|".join(s.value for s in TradingState)
    try:
        state = TradingState(words[0]) if len(words) == 1 else None
    except ValueError:
        state = None
    if state is None:
        await reply(message, deps, f"Usage: /trading {states}")
        return
    await _send(SetTradingState, message, deps, state=state)
    await reply(message, deps, f"Trading state {state.value} requested; see /risk.")


async def cancel(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = args(command)
    usage = "Usage: /cancel CLIENT_ORDER_ID [SYMBOL] (the id the order was placed with)"
    if not 1 <= len(words) <= 2 or not CLIENT_ORDER_ID.fullmatch(words[0]):
        await reply(message, deps, usage)
        return
    symbol = ""
    if len(words) == 2:
        try:
            symbol = normalize_symbol(words[1], deps.allowed_symbols)
        except InvalidSymbolError as exc:
            await reply(message, deps, f"{exc}.\n{usage}")
            return
        if symbol == ALL_SYMBOLS:
            await reply(message, deps, f"Name one symbol, not ALL.\n{usage}")
            return
    await _send(CancelOrder, message, deps, client_order_id=words[0], symbol=symbol)
    await reply(message, deps, f"Cancel of order {words[0]} requested; see /orders.")


async def activate(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = args(command)
    usage = "Usage: /activate MODEL_ID [force] (force: past the promotion gate)"
    if (
        not 1 <= len(words) <= 2
        or not _MODEL_ID.fullmatch(words[0])
        or words[1:] not in ([], ["force"])
    ):
        await reply(message, deps, usage)
        return
    from levibot.ml.registries import activate_gated

    force = len(words) == 2
    moved = await _move_pointer(
        message, deps, lambda store: activate_gated(store, words[0], force=force)
    )
    if moved is not None:
        cmd_id = await _tell_scorers(message, deps, moved)
        await reply(message, deps, f"Model {moved} is active; command {cmd_id[:8]} sent.")


async def rollback(message: Message, command: CommandObject, deps: BotDeps) -> None:
    moved = await _move_pointer(message, deps, lambda store: store.rollback())
    if moved is not None:
        cmd_id = await _tell_scorers(message, deps, moved)
        await reply(message, deps, f"Rolled back to model {moved}; command {cmd_id[:8]} sent.")


async def _move_pointer(
    message: Message, deps: BotDeps, move: Callable[[Any], Awaitable[Any]]
) -> str | None:
    """Move the registry's persisted pointer; return the active model id, or None after
    saying why it did not move."""
    if deps.registry is None:
        await reply(message, deps, "No model registry here: models cannot be changed.")
        return None
    try:
        card = await move(await deps.registry())
    except LevibotError as exc:  # unknown model, not promoted, another schema, nothing before
        await reply(message, deps, f"Not changed: {exc}")
        return None
    except Exception as exc:  # PostgreSQL away: say so, and keep serving
        deps.log.error("telegram.registry_failed", error=mask_text(str(exc)))
        await reply(message, deps, "Not changed: the model registry cannot be reached now.")
        return None
    return str(card.model_id)


async def _tell_scorers(message: Message, deps: BotDeps, model_id: str) -> str:
    cmd = await _send(ActivateModel, message, deps, model_id=model_id)
    return cmd.command_id


async def refused(message: Message, command: CommandObject, deps: BotDeps) -> None:
    name = command.command
    if anonymous(message):
        # Telegram hides who sent this: the only way is for the admin to show themselves.
        deps.log.warning("telegram.admin_refused", command=name, anonymous=True)
        await reply(
            message,
            deps,
            f"/{name} needs to know who you are, and this message was sent anonymously "
            "(on behalf of the group or a channel). Anonymous admins cannot run admin "
            "commands: turn off 'Remain anonymous' in your admin rights, or send the "
            "command from your own account, for example in a private chat with me.",
        )
        return
    deps.log.warning("telegram.admin_refused", command=name, user_id=user_id(message))
    await reply(
        message,
        deps,
        f"/{name} is for admins only. Your Telegram user id is {user_id(message)}; "
        "ask an operator to add it to telegram.admin_user_ids.",
    )


def router() -> Router:
    """Return a new router with this feature's handlers."""
    r = Router(name="admin")
    r.message.register(killswitch, Command("killswitch"), IsAdmin())
    r.message.register(trading, Command("trading"), IsAdmin())
    r.message.register(cancel, Command("cancel"), IsAdmin())
    r.message.register(activate, Command("activate"), IsAdmin())
    r.message.register(rollback, Command("rollback"), IsAdmin())
    r.message.register(refused, Command(*ADMIN_COMMANDS))
    return r

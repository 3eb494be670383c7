"""Admin commands: the kill switch and the trading state, sent as bus commands.

``IsAdmin`` guards each handler; an admin command that fails the filter falls through to
``refused``, which says why. Nothing changes state here: the risk engine acts on the
command it receives.
"""

from __future__ import annotations

import uuid

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message

from levibot.messages import Command as BusCommand
from levibot.messages import SetKillSwitch, SetTradingState, TradingState
from sidecars.telegram.handlers.common import ON_OFF, BotDeps, anonymous, args, reply, user_id

#: The commands only admins may run.
ADMIN_COMMANDS = ("killswitch", "trading")


class IsAdmin(Filter):
    """Pass messages that a person listed in ``telegram.admin_user_ids`` signed."""

    async def __call__(self, message: Message, deps: BotDeps) -> bool:
        # A shared sender id (an anonymous admin, a channel) can never be an admin.
        return not anonymous(message) and user_id(message) in deps.admin_user_ids


async def _send(deps: BotDeps, cmd: BusCommand) -> None:
    await deps.publish(cmd)
    deps.log.info("telegram.command", command=type(cmd).__name__, issued_by=cmd.issued_by)


async def killswitch(message: Message, command: CommandObject, deps: BotDeps) -> None:
    words = [a.lower() for a in args(command)]
    if len(words) != 1 or words[0] not in ON_OFF:
        await reply(message, deps, "Usage: /killswitch on|off")
        return
    on = ON_OFF[words[0]]
    now = deps.now_ns()
    cmd = SetKillSwitch(
        ts_event=now,
        ts_init=now,
        command_id=uuid.uuid4().hex,
        issued_by=f"telegram:{user_id(message)}",
        on=on,
    )
    await _send(deps, cmd)
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
    now = deps.now_ns()
    cmd = SetTradingState(
        ts_event=now,
        ts_init=now,
        command_id=uuid.uuid4().hex,
        issued_by=f"telegram:{user_id(message)}",
        state=state,
    )
    await _send(deps, cmd)
    await reply(message, deps, f"Trading state {state.value} requested; see /risk.")


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
    r.message.register(refused, Command(*ADMIN_COMMANDS))
    return r

"""The bus: local mailboxes first, mirrored onto NATS when configured."""

from levibot.bus._delivery import Delivery
from levibot.bus._local import LocalBus, Subscription
from levibot.bus._mailbox import Mailbox, MailboxClosed
from levibot.bus._nats import NatsMirror, publish_once

__all__ = [
    "Delivery",
    "LocalBus",
    "Mailbox",
    "MailboxClosed",
    "NatsMirror",
    "Subscription",
    "publish_once",
]

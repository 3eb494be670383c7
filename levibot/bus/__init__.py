"""The bus: local mailboxes first, mirrored onto NATS when configured."""

from levibot.bus._delivery import Delivery, error_text
from levibot.bus._local import LocalBus, Subscription
from levibot.bus._mailbox import Done, Mailbox, MailboxClosed
from levibot.bus._nats import NatsMirror, publish_once

__all__ = [
    "Delivery",
    "Done",
    "LocalBus",
    "Mailbox",
    "MailboxClosed",
    "NatsMirror",
    "Subscription",
    "error_text",
    "publish_once",
]

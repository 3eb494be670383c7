"""Subject planning: which subjects a node subscribes to, and the JetStream stream behind them.

Every message type with a ``subject_root`` crosses NATS under ``<namespace>.<root>``. Durable
types (and every type with ``[nats] durable_all``) go through the JetStream stream, whose
subjects are those of every durable type levibot defines plus the durable types that nodes of
the namespace define themselves; the others ride core NATS.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nats.js.errors
from nats.js import api

from levibot.messages import CORE_TYPES, Message
from levibot.settings import NatsConfig

#: The header naming the node that published a JetStream message (its redeliveries skip it).
ORIGIN = "Lb-Origin"
#: Durable subjects every stream carries, whatever the nodes' types.
DURABLE_SUBJECTS = ("lb.order.>", "lb.ctl.>", "lb.alert.>")


def namespace(config: NatsConfig) -> str:
    """Return the subject prefix of ``config``'s namespace (``""`` or ``"<namespace>."``)."""
    return f"{config.namespace}." if config.namespace else ""


def minimal(subjects: set[str]) -> list[str]:
    """Drop subjects that another ``prefix.>`` wildcard in the set already covers."""
    wild = [w[:-1] for w in subjects if w.endswith(">")]
    return sorted(s for s in subjects if not any(s != w + ">" and s.startswith(w) for w in wild))


def patterns(types: Iterable[type[Message]], durable_all: bool) -> dict[str, bool]:
    """Return the subject patterns to subscribe for ``types``, each with its durability."""
    out: dict[str, bool] = {}
    for cls in types:
        if not cls.subject_root:
            raise ValueError(f"{cls.__name__} has no subject_root and cannot cross NATS")
        durable = cls.durable or durable_all
        out[cls.subject_root + ".>"] = durable
        # A subject may be the bare root (lb.portfolio). Core subscriptions cost nothing, so
        # always take it; a durable one needs its own consumer, made only where the type does
        # not override subject() (durable types with their own subject() add a suffix).
        if not durable or cls.subject is Message.subject:
            out[cls.subject_root] = durable
    return out


def consumer_name(prefix: str, pattern: str, ns: str) -> str:
    """Return the durable consumer name of ``prefix`` (the node's) for ``pattern``."""
    suffix = pattern[len(ns) :].replace(".", "_").replace(">", "all")
    if not pattern.endswith(">"):
        suffix += "_root"
    return f"{prefix}_{suffix}"


def stream_subjects(config: NatsConfig, types: Iterable[type[Message]]) -> set[str]:
    """Return the subjects the stream must carry for a node of ``types``.

    That is every durable type levibot defines (``CORE_TYPES``; with ``durable_all`` all of
    them), whatever the node's own types, plus this node's other durable ``types``. Nodes that
    differ only in which of levibot's types they take thus write the same set, and an update
    that overwrites another's (see ``ensure_stream``) removes nothing; a type defined outside
    ``levibot.messages`` is added by its own nodes only.
    """
    ns = namespace(config)
    durable = [
        t for t in (*CORE_TYPES, *types) if (t.durable or config.durable_all) and t.subject_root
    ]
    subjects = {ns + s for s in DURABLE_SUBJECTS}
    subjects.update(ns + pattern for pattern in patterns(durable, config.durable_all))
    return subjects


async def ensure_stream(js: Any, config: NatsConfig, types: Iterable[type[Message]]) -> None:
    """Create the stream with ``stream_subjects(config, types)``, or add those to it.

    Nodes that start at once race for the stream: a create that lost (the server then says the
    name or the subjects are taken) and an update that another node's overwrote are tried again
    from what the server holds, until the stream carries this node's subjects. JetStream has no
    compare-and-set for a stream's configuration, so an update written from an older read can
    still remove subjects another node saw there and returned on. ``stream_subjects`` makes
    every node of one levibot version write the same set, so only the subjects of types defined
    outside ``levibot.messages`` (plugins, tests) can be lost this way, between nodes that
    differ in them, or those of new types while nodes of two versions start at once.
    """
    subjects = stream_subjects(config, types)
    refused: Exception | None = None  # the server's last word, for the error if it never works
    for _ in range(_STREAM_TRIES):
        try:
            info = await js.stream_info(config.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(
                    api.StreamConfig(
                        name=config.stream,
                        subjects=minimal(subjects),
                        storage=api.StorageType.FILE,
                        duplicate_window=config.duplicate_window_s,
                        max_age=86_400.0,
                    )
                )
            except nats.js.errors.BadRequestError as exc:
                refused = exc  # another node made it first: the next pass merges into theirs
            continue
        have = set(info.config.subjects or ())
        merged = minimal(have | subjects)
        missing = set(merged) - have
        if not missing:  # this node's subjects are there, or under wider ones
            return
        info.config.subjects = merged  # another node's types: the stream carries the union
        try:
            await js.update_stream(info.config)
        except nats.js.errors.BadRequestError as exc:
            refused = exc  # changed meanwhile by another node: read it again
    raise RuntimeError(
        f"cannot create or extend the JetStream stream {config.stream} with {minimal(subjects)} "
        f"in {_STREAM_TRIES} tries: {refused!r}"
    )


#: Reads and writes of the stream one node tries before giving up (``ensure_stream``).
_STREAM_TRIES = 20

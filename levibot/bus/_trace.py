"""Trace context over NATS (``[tracing]`` on only; ``levibot.tracing`` holds the rest).

Installed by the mirror when a node traces, never otherwise, so the untraced path runs none of
this. What travels:

- JetStream (one message per NATS message): the W3C ``traceparent`` header.
- Core NATS (frames of several messages, ``_frame``): ``traceparent`` when every message of
  the frame has the same context (one tick per frame, the common case), else
  ``levibot-traceparents``: one W3C value per message of the frame, in order, comma-separated
  (empty for a message without one). A frame without a context has no header at all.

On the way out the encoders are wrapped (a core frame's payload carries its headers to the
publish); on the way in the subscription callbacks are, and the messages they deliver are
bound to the context their header named (``Tracer.contexts``), where the handler finds it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from levibot.errors import DecodeError
from levibot.messages import Message
from levibot.tracing import TRACEPARENT, Tracer

if TYPE_CHECKING:
    from levibot.bus import _frame

#: A core frame's per-message contexts when they differ (W3C values, comma-separated).
TRACEPARENTS = "levibot-traceparents"

#: While a subscription callback runs: (message or None for "any", traceparent) pairs of
#: the NATS message being delivered. The callback awaits ``deliver`` in the same task.
_incoming: contextvars.ContextVar[list[tuple[Message | None, str]] | None] = contextvars.ContextVar(
    "levibot_trace_incoming", default=None
)


class _Frame(bytes):
    """A core frame's payload with the trace headers to publish it with."""

    headers: dict[str, str]


def frame_headers(tracer: Tracer, msgs: Sequence[Message]) -> dict[str, str] | None:
    """Return the trace headers of a frame of ``msgs`` (None when none has a context)."""
    values = [tracer.traceparent(m) or "" for m in msgs]
    first = values[0]
    if all(v == first for v in values):
        return {TRACEPARENT: first} if first else None
    return {TRACEPARENTS: ",".join(values)}


def wrap_encoding(mirror: Any, tracer: Tracer) -> None:
    """Make the mirror's encoders put each message's context into its publish."""
    core_encode = mirror.core.encode
    durable_encode = mirror.durable.encode

    def traced_core(batch: list[Message]) -> list[tuple[str, bytes, int]]:
        # Runs of one subject, in order: a frame goes out on one subject, so a run of one
        # subject is always one frame whatever else ``core`` merges, and its headers align
        # with it; the receiver still sees the messages in the order they were published.
        runs: list[list[Message]] = []
        last = None
        for msg in batch:
            subject = msg.subject()
            if subject == last:
                runs[-1].append(msg)
            else:
                runs.append([msg])
                last = subject
        out = []
        for group in runs:
            for subject, data, count in core_encode(group):
                if count == len(group):  # else one was unencodable: the rest go untraced
                    headers = frame_headers(tracer, group)
                    if headers is not None:
                        data = _Frame(data)
                        data.headers = headers
                out.append((subject, data, count))
        return out

    def traced_durable(msg: Message) -> Any:
        item = durable_encode(msg)
        if item is not None:
            value = tracer.traceparent(msg)
            if value is not None:
                item[2][TRACEPARENT] = value  # a fresh dict per message
        return item

    mirror.core.encode = traced_core
    mirror.durable.encode = traced_durable


class _Publisher:
    """The NATS client as core egress sees it: a traced frame is published with its headers."""

    def __init__(self, nc: Any) -> None:
        self._nc = nc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)

    async def publish(self, subject: str, payload: bytes = b"", **kw: Any) -> None:
        if type(payload) is _Frame:
            kw["headers"] = {**(kw.get("headers") or {}), **payload.headers}
            payload = bytes(payload)
        await self._nc.publish(subject, payload, **kw)


class _Subscriber:
    """A NATS (or JetStream) client whose subscription callbacks note the incoming contexts."""

    def __init__(self, client: Any, decoder: _frame.FrameDecoder) -> None:
        self._client = client
        self._decoder = decoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def subscribe(self, subject: str, *args: Any, cb: Any = None, **kw: Any) -> Any:
        if cb is not None:
            cb = self._traced(cb)
        return await self._client.subscribe(subject, *args, cb=cb, **kw)

    def _traced(self, cb: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def traced_cb(raw: Any) -> None:
            headers = raw.headers
            pairs = incoming(headers, raw.data, self._decoder) if headers else None
            if pairs is None:
                await cb(raw)
                return
            token = _incoming.set(pairs)
            try:
                await cb(raw)
            finally:
                _incoming.reset(token)

        return traced_cb


def incoming(
    headers: dict[str, str], data: bytes, decoder: _frame.FrameDecoder
) -> list[tuple[Message | None, str]] | None:
    """Return the (message, traceparent) pairs a NATS message's headers name, or None."""
    values = headers.get(TRACEPARENTS)
    if values is None:
        value = headers.get(TRACEPARENT)
        return [(None, value)] if value else None  # every message in it: one context
    from levibot.bus._frame import is_frame

    if not is_frame(data):
        return None
    try:
        msgs = decoder.decode(data)[3]
    except DecodeError:
        return None  # the mirror's own decoding counts and logs it
    return [
        (m, v)
        for m, v in zip(msgs, values.split(","), strict=False)
        if v and not isinstance(m, DecodeError)
    ]


def wrap_connection(mirror: Any) -> None:
    """Give core egress and the ingress the traced views of the connection (after connect)."""
    from levibot.bus._frame import FrameDecoder

    decoder = FrameDecoder(mirror.codec)
    mirror.core.nc = _Publisher(mirror.nc)
    mirror.ingress.nc = _Subscriber(mirror.nc, decoder)
    mirror.ingress.js = _Subscriber(mirror.js, decoder)


def wrap_deliver(
    deliver: Callable[[Message, Any], Awaitable[int]], tracer: Tracer
) -> Callable[[Message, Any], Awaitable[int]]:
    """Return ``deliver`` binding each message to the context its NATS headers named."""

    async def traced_deliver(msg: Message, done: Any) -> int:
        pairs = _incoming.get()
        if pairs:
            for candidate, value in pairs:
                # A frame's messages are decoded again by the ingress: equal, not identical.
                if candidate is None or candidate == msg:
                    tracer.bind_traceparent(msg, value)
                    break
        return await deliver(msg, done)

    return traced_deliver

"""JetStream publishes whose acks come back on one subscription: durable egress's publisher.

nats-py's ``js.publish`` is a request per message: a random reply token, a response future, an
``asyncio.wait_for``, and a JSON ``PubAck`` built from every ack. Durable egress publishes a
batch at a time and needs to know one thing per message: did the stream store it? So a batch
goes out as plain PUBs whose reply subjects share one inbox prefix, one wildcard subscription
(made once) collects the acks, the batch waits on one future with one deadline, and an ack is
parsed only when it carries an error. That is 0.46-0.63x the client CPU per message of gathered
``js.publish`` calls (``bench/bench_js_publish.py``).

The failure cases are the ones ``js.publish`` raises, so the egress's retry/spill policy reads
them the same way:

- no stream listens on the subject: ``NoStreamResponseError`` (the server's 503 status reply);
- the stream refuses (full, wrong sequence...): the ``APIError`` subclass of its error code;
- no ack within the timeout (a reconnect lost it, the server is away): ``nats.errors.TimeoutError``;
- the publish itself fails (connection closed, outbound buffer full): that exception.

Reply tokens are a counter under a fresh inbox prefix, never reused, so a late ack for a
timed-out publish finds no one waiting and is dropped; the retry that follows carries the same
``Nats-Msg-Id``, which the stream deduplicates.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
import nats.js.errors

from levibot.bus._link import CoreLink
from levibot.bus._spill import Item

#: The status the server replies with when no stream (no responder) is bound to the subject.
NO_RESPONDERS = "503"


class _Batch:
    """One batch in flight: its outcomes, how many acks are still out, whether every PUB has
    gone out, and its completion."""

    __slots__ = ("done", "left", "results", "sent")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.results: list[BaseException | None] = [None] * size
        self.left = 0
        # Until the last PUB is out the batch is not complete, even if every ack so far came
        # back: a PUB that flushes yields to the loop, and the acks of the first ones arrive.
        self.sent = False
        self.done = done


class JetStreamPublisher:
    """Publishes batches to JetStream on ``nc``: a connected nats-py client or ``CoreLink``."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self._prefix = ""  # the inbox prefix of every reply subject, once subscribed
        self._next = 0  # the last reply token used
        self._waiting: dict[str, tuple[_Batch, int]] = {}  # reply token -> its batch and index

    async def publish(self, items: list[Item], timeout: float) -> list[BaseException | None]:
        """Publish ``items`` (subject, payload, headers) and wait at most ``timeout`` seconds
        for their acks. Return, per item, None when the stream stored it, or the failure."""
        if not self._prefix:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        batch = _Batch(len(items), loop.create_future())
        tokens = []
        for index, (subject, data, headers) in enumerate(items):
            self._next += 1
            token = str(self._next)
            # Waiting before the PUB: a publish that flushes may see its ack come back before
            # it returns.
            self._waiting[token] = (batch, index)
            tokens.append(token)
            batch.left += 1
            try:
                await self.nc.publish(subject, data, reply=self._prefix + token, headers=headers)
            except Exception as exc:  # not sent: no ack to wait for (unless one came already)
                if self._waiting.pop(token, None) is not None:
                    batch.results[index] = exc
                    batch.left -= 1
        batch.sent = True
        try:
            if batch.left:
                await asyncio.wait_for(batch.done, timeout)
        except TimeoutError:
            for token in tokens:
                slot = self._waiting.get(token)
                if slot is not None:
                    batch.results[slot[1]] = nats.errors.TimeoutError()
        finally:  # timed out or cancelled: a late ack finds no one waiting
            for token in tokens:
                self._waiting.pop(token, None)
        return batch.results

    async def _subscribe(self) -> None:
        prefix = self.nc.new_inbox() + "."
        if isinstance(self.nc, CoreLink):  # acks handled inside its read
            self.nc.subscribe(prefix + "*", self._on_ack)
        else:
            await self.nc.subscribe(prefix + "*", cb=self._on_reply)
        self._prefix = prefix

    async def _on_reply(self, msg: Any) -> None:
        self._on_ack(msg.subject, "", msg.data, msg.headers)

    def _on_ack(
        self, subject: str, _reply: str, data: bytes, headers: dict[str, str] | None
    ) -> None:
        slot = self._waiting.pop(subject[len(self._prefix) :], None)
        if slot is None:
            return  # an ack that came after its batch gave up: the retry is deduplicated
        batch, index = slot
        batch.results[index] = outcome(data, headers)
        batch.left -= 1
        if batch.left == 0 and batch.sent and not batch.done.done():
            batch.done.set_result(None)


def outcome(data: bytes, headers: dict[str, str] | None) -> BaseException | None:
    """Return None for an ack that says the message is stored, else the error it carries."""
    if not data:  # a status reply, not an ack
        status = (headers or {}).get("Status", "")
        if status == NO_RESPONDERS:
            return nats.js.errors.NoStreamResponseError()
        return nats.js.errors.APIError(description=f"unexpected status reply {status!r}")
    if b'"error"' not in data:  # {"stream":..., "seq":...[, "duplicate":true]}
        return None
    try:
        reply = json.loads(data)
    except ValueError:  # also a payload that is not UTF-8
        reply = None
    if isinstance(reply, dict):
        if "error" not in reply and "seq" in reply:
            return None  # an ack whose stream happens to be named "error"
        try:
            nats.js.errors.APIError.from_error(reply.get("error"))  # raises its code's subclass
        except nats.js.errors.APIError as exc:
            return exc
        except (KeyError, TypeError):  # no error object, or not {"code":..., "description":...}
            pass
    return nats.js.errors.APIError(description=f"unreadable ack {data[:200]!r}")

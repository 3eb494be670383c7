"""The core-NATS wire format: several bus messages in one NATS message, without headers.

A frame is one msgpack array ``[origin, incarnation, first, [message, ...]]``: the node that
sent it, the sender's incarnation and the sequence number of its first message (``_sequence``:
the messages are numbered ``first``, ``first + 1``, …), then the messages as the codec encodes
them (tagged maps). Egress sends each run of messages under one subject root it has queued when
the loop turns (``lb.md.tick.AAA``, ``lb.md.tick.BBB``, …) as one frame, on the subject of the
run's first message, so NATS, nats-py and the receiver pay their per-message costs (a PUB, a
parse, a task wake-up) once per frame, nobody pays for a header block, and a frame is encoded
and decoded in one call each. Runs, not groups: the order of publication is kept across
subjects. Nodes subscribe to roots (``lb.md.tick.>``), so they see every message; a client
subscribed to one symbol's subject sees the frames that start with that symbol.

A receiver tells a frame (a 4-array: first byte ``0x94``) from a single message (a map: what a
JetStream message, an alert published on core NATS, or another client sends), and takes both.
A frame that does not decode as a whole (a type this node does not know among its messages) is
decoded message by message, so one bad message costs itself only.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from levibot.errors import DecodeError
from levibot.messages import Codec, Message

#: The first byte of every frame (a msgpack fixarray of 4); a message is a map.
FRAME_START = 0x94


def is_frame(data: bytes) -> bool:
    """True when ``data`` is a frame rather than a single encoded message."""
    return bool(data) and data[0] == FRAME_START


class FrameEncoder:
    """Encodes frames of messages (one ``encode`` call per frame)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()

    def encode(self, origin: str, incarnation: str, first: int, msgs: list[Message]) -> bytes:
        """Return the frame of ``msgs``, numbered from ``first``."""
        return self._encoder.encode((origin, incarnation, first, msgs))


class FrameDecoder:
    """Decodes frames into messages of ``codec``'s types."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        types = codec.types
        union: Any = Union[types] if len(types) > 1 else types[0]  # noqa: UP007
        self._whole = msgspec.msgpack.Decoder(tuple[str, str, int, list[union]])
        self._raw = msgspec.msgpack.Decoder(tuple[str, str, int, list[msgspec.Raw]])

    def decode(self, data: bytes) -> tuple[str, str, int, list[Message | DecodeError]]:
        """Return ``(origin, incarnation, first, messages)``; a message that does not decode is
        its ``DecodeError`` in the list. Raise ``DecodeError`` when the frame itself is bad."""
        try:
            return self._whole.decode(data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, RecursionError):
            pass  # msgspec.ValidationError is a DecodeError: one message, or the frame, is bad
        try:
            origin, incarnation, first, raws = self._raw.decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"malformed frame: {exc}") from exc
        except RecursionError:
            raise DecodeError("malformed frame: nested too deeply") from None
        out: list[Message | DecodeError] = []
        for raw in raws:
            try:
                out.append(self.codec.decode(raw))
            except DecodeError as exc:
                out.append(exc)
        return origin, incarnation, first, out

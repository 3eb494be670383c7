"""msgpack on the wire: one encoder and one decoder per set of message types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import msgspec

from levibot.errors import DecodeError
from levibot.messages._base import Message


def _concrete(types: Iterable[type[Message]]) -> tuple[type[Message], ...]:
    seen: dict[str, type[Message]] = {}
    for cls in types:
        tag = cls.__struct_config__.tag
        if tag is None:
            raise TypeError(f"{cls.__name__} is not a tagged message type")
        other = seen.setdefault(str(tag), cls)
        if other is not cls:
            raise TypeError(f"{cls.__name__} and {other.__name__} share the tag {tag!r}")
    return tuple(seen.values())


class Codec:
    """Encode any message; decode those of the given types (a tagged union)."""

    def __init__(self, types: Iterable[type[Message]]) -> None:
        self.types = _concrete(types)
        self._encoder = msgspec.msgpack.Encoder()
        union: Any = Union[self.types] if len(self.types) > 1 else self.types[0]  # noqa: UP007
        self._decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(union)

    def encode(self, msg: Message) -> bytes:
        """Return the msgpack bytes of ``msg``."""
        return self._encoder.encode(msg)

    def decode(self, data: bytes) -> Message:
        """Return the message in ``data``; raise ``DecodeError`` for malformed or unknown input."""
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise DecodeError(f"invalid message: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(f"malformed message: {exc}") from exc
        except RecursionError:  # msgspec skips even unknown fields recursively
            raise DecodeError("malformed message: nested too deeply") from None

"""Fuzz the bus codec: whatever bytes arrive, ``decode`` returns a message or raises DecodeError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot.errors import DecodeError
from levibot.messages import CORE_TYPES, Codec, Message
from tests.fuzz.support import budget

GOLDEN = sorted((Path(__file__).parents[1] / "golden").glob("*.msgpack"))
CODEC = Codec(CORE_TYPES)
TAGS = [str(t.__struct_config__.tag) for t in CORE_TYPES]

# Every msgpack type: the ints span msgpack's whole range (int64 and uint64).
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from(TAGS)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["type", "symbol"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


def strategy_for(t: mi.Type) -> st.SearchStrategy[Any]:
    """Return a strategy of valid values for a msgspec type (the kinds messages use)."""
    match t:
        case mi.IntType():
            low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
            high = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
            return st.integers(low, high)
        case mi.FloatType():
            bounded = any(b is not None for b in (t.ge, t.gt, t.le, t.lt))
            return st.floats(
                min_value=t.ge if t.ge is not None else t.gt,
                max_value=t.le if t.le is not None else t.lt,
                exclude_min=t.gt is not None,
                exclude_max=t.lt is not None,
                allow_nan=not bounded,
            )
        case mi.StrType():
            if t.pattern is not None:
                return st.from_regex(t.pattern)
            return st.text(min_size=t.min_length or 0, max_size=t.max_length or 30)
        case mi.BoolType():
            return st.booleans()
        case mi.EnumType():
            return st.sampled_from(t.cls)
        case mi.NoneType():
            return st.none()
        case mi.LiteralType():
            return st.sampled_from(t.values)
        case mi.UnionType():
            return st.one_of([strategy_for(u) for u in t.types])
        case mi.VarTupleType():
            return st.lists(strategy_for(t.item_type), max_size=8).map(tuple)
        case mi.TupleType():
            return st.tuples(*(strategy_for(u) for u in t.item_types))
        case mi.ListType():
            return st.lists(strategy_for(t.item_type), max_size=8)
        case mi.DictType():
            return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), max_size=5)
        case mi.AnyType():
            return msgpack_values
        case mi.StructType():
            fields = {f.encode_name: strategy_for(f.type) for f in t.fields}
            return st.fixed_dictionaries(fields).map(lambda kw: t.cls(**kw))
    raise NotImplementedError(f"no strategy for {t}: extend strategy_for")


messages = st.one_of([strategy_for(mi.type_info(cls)) for cls in CORE_TYPES])


def decode_or_refuse(data: bytes) -> Message | None:
    """Decode ``data``; only DecodeError may be raised, and a decoded message encodes again."""
    try:
        msg = CODEC.decode(data)
    except DecodeError:
        return None
    assert isinstance(msg, CODEC.types)
    CODEC.encode(msg)  # what came in can go out again (egress never chokes on it)
    return msg


@budget(300)
@given(data=st.binary(max_size=300))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    decode_or_refuse(data)


@budget(300)
@given(value=msgpack_values)
def test_random_msgpack_structures_decode_or_raise_decode_error(value: Any) -> None:
    decode_or_refuse(msgspec.msgpack.encode(value))


@budget(300)
@given(
    path=st.sampled_from(GOLDEN),
    cuts=st.lists(st.tuples(st.sampled_from(["flip", "truncate", "extend", "delete"]),
                            st.integers(0, 400), st.binary(min_size=1, max_size=8)),
                  min_size=1, max_size=3),
)  # fmt: skip
def test_mutated_golden_payloads_decode_or_raise_decode_error(
    path: Path, cuts: list[tuple[str, int, bytes]]
) -> None:
    data = bytearray(path.read_bytes())
    for op, at, extra in cuts:
        at %= len(data) + 1
        if op == "flip" and at < len(data):
            data[at] ^= extra[0] or 0xFF
        elif op == "truncate":
            del data[at:]
        elif op == "extend":
            data[at:at] = extra
        elif op == "delete":
            del data[at : at + len(extra)]
    decode_or_refuse(bytes(data))


@budget(300)
@given(
    path=st.sampled_from(GOLDEN),
    key=st.integers(0, 30),
    value=msgpack_values,
    drop=st.booleans(),
)
def test_golden_payload_with_one_field_replaced_or_dropped(
    path: Path, key: int, value: Any, drop: bool
) -> None:
    fields: dict[str, Any] = msgspec.msgpack.decode(path.read_bytes())
    name = sorted(fields)[key % len(fields)]
    if drop:
        del fields[name]
    else:
        fields[name] = value
    decode_or_refuse(msgspec.msgpack.encode(fields))


@budget(400)
@given(msg=messages)
def test_any_valid_message_round_trips(msg: Message) -> None:
    data = CODEC.encode(msg)
    back = CODEC.decode(data)
    assert type(back) is type(msg)
    assert CODEC.encode(back) == data  # bytes, so that NaN fields compare too


def test_the_golden_payloads_are_all_there() -> None:
    # The mutation tests above draw from these; an empty glob would fuzz nothing.
    assert {p.stem for p in GOLDEN} == {t.__name__ for t in CORE_TYPES}


@budget(50)
@given(
    path=st.sampled_from(GOLDEN),
    depth=st.integers(1, 3000),
    opener=st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"]),
)
def test_deeply_nested_unknown_field_decodes_or_raises_decode_error(
    path: Path, depth: int, opener: bytes
) -> None:
    fields: dict[str, Any] = msgspec.msgpack.decode(path.read_bytes())
    # The golden message plus a last field "zz" (None, the final byte) replaced by the nesting.
    head = msgspec.msgpack.encode({**fields, "zz": None})[:-1]
    decode_or_refuse(head + opener * depth + b"\xc0")


def test_regression_nesting_deeper_than_the_recursion_limit_is_a_decode_error() -> None:
    # Found by fuzzing: msgspec raised RecursionError (not DecodeError) out of the codec, and
    # the NATS ingress catches only DecodeError.
    # 100,000 deep: past msgspec's recursion bound on 3.11 (the recursion limit, 1,000) and on
    # 3.12+ (the C recursion limit, 10,000 on 3.13, under which 1,000 deep decodes fine).
    data = msgspec.msgpack.encode({"type": "levibot.Tick", "zz": None})[:-1]
    with pytest.raises(DecodeError, match="nested too deeply"):
        CODEC.decode(data + b"\x91" * 100_000 + b"\xc0")

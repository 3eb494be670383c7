"""Fuzz how the bot reads a getUpdates answer: any JSON, and real updates with parts broken.

Whatever a batch holds, ``parse_updates`` must not raise, must account for every value (kept or
dropped), must keep every well-formed update, and must move the offset past every update that
has an id, so that nothing served can block the next poll.
"""

from __future__ import annotations

import copy
from typing import Any

from aiogram import Bot
from aiogram.exceptions import ClientDecodeError
from hypothesis import given
from hypothesis import strategies as st

from sidecars.telegram.updates import PREFIX_CHARS, parse_updates, poll_error, update_id_of
from tests.fuzz.support import budget

BOT = Bot("123456:AAfuzz")  # never makes a request

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def good_update(update_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": 5, "type": "private", "first_name": "A"},
            "from": {"id": 5, "is_bot": False, "first_name": "A"},
            "text": text,
        },
    }


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return every key path into ``value``'s dicts."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(paths(child, (*prefix, key)))
    return found


@st.composite
def broken_updates(draw: st.DrawFn) -> Any:
    """Return a real update with one part deleted or replaced by any JSON value."""
    update = good_update(draw(st.integers(1, 2**31)), draw(st.text(max_size=30)))
    path = draw(st.sampled_from(paths(update)))
    parent = update
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return update


values = st.lists(
    json_values | broken_updates() | st.builds(good_update, st.integers(1, 2**31), st.text()),
    max_size=8,
)


@budget(300)
@given(values)
def test_every_value_is_kept_or_dropped_and_the_offset_passes_every_id(batch: list[Any]) -> None:
    before = copy.deepcopy(batch)
    parsed = parse_updates(BOT, batch)
    assert len(parsed.updates) + len(parsed.dropped) == len(batch)
    ids = [i for i in map(update_id_of, batch) if i is not None]
    assert parsed.next_offset == (max(ids) + 1 if ids else None)
    assert all(len(d.prefix) <= PREFIX_CHARS for d in parsed.dropped)
    assert batch == before  # the answer is read, never changed


@budget(200)
@given(st.lists(st.builds(good_update, st.integers(-(2**40), 2**40), st.text()), max_size=5))
def test_well_formed_updates_are_always_kept(batch: list[dict[str, Any]]) -> None:
    parsed = parse_updates(BOT, batch)
    assert [u.update_id for u in parsed.updates] == [v["update_id"] for v in batch]
    assert [u.message.text for u in parsed.updates if u.message] == [
        v["message"]["text"] for v in batch
    ]


@budget(200)
@given(st.text(), json_values)
def test_a_poll_error_is_short_whatever_it_carries(message: str, data: Any) -> None:
    assert len(poll_error(ClientDecodeError(message, ValueError(message), data))) <= 200
    assert len(poll_error(RuntimeError(message))) <= 200

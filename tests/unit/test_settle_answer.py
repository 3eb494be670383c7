"""A settle answer from the wire: a node name and its published count, or nothing usable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levibot.bus._settle import parse_answer


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"node-a 42", ("node-a", 42)),
        (b"\xff\xfe 1", None),  # not UTF-8
        (b"node-a many", None),
        (b"node-a", None),
        (b" 3", None),
        (b"node-a -1", None),
        (b"", None),
    ],
)
def test_parse_answer(data: bytes, want: tuple[str, int] | None) -> None:
    assert parse_answer(data) == want


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_are_refused_never_raise(data: bytes) -> None:
    answer = parse_answer(data)
    assert answer is None or (answer[0] and answer[1] >= 0)

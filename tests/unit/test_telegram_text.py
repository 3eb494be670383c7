"""Splitting texts at Telegram's limit: line breaks first, UTF-16 counting, a marker when cut."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.telegram.text import BLANK, TEXT_LIMIT, split_text, tg_len


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_a_short_text_is_one_part_and_a_full_one_still_fits() -> None:
    assert split_text("  hello\n") == ["hello"]
    assert split_text("x" * TEXT_LIMIT) == ["x" * TEXT_LIMIT]
    assert split_text("x" * (TEXT_LIMIT + 1)) == ["x" * TEXT_LIMIT, "x"]


def test_long_texts_split_at_line_breaks_and_lose_nothing() -> None:
    lines = [f"line {i:03d} " + "=" * 90 for i in range(150)]  # 15,000 characters
    text = "\n".join(lines)
    parts = split_text(text)
    assert len(parts) == 4
    assert all(tg_len(p) <= TEXT_LIMIT for p in parts)
    assert all(p.split("\n")[0].startswith("line ") for p in parts)  # no line was cut
    assert "\n".join(parts) == text


def test_a_line_without_breaks_is_cut_at_a_space_else_anywhere() -> None:
    words = " ".join(["word"] * 2000)  # 9,999 characters, one line
    parts = split_text(words)
    assert all(set(p.split(" ")) == {"word"} for p in parts)
    assert " ".join(parts) == words
    solid = "y" * 9000
    assert "".join(split_text(solid)) == solid


def test_emoji_outside_the_bmp_count_twice_as_telegram_counts_them() -> None:
    assert tg_len("😀") == 2 and tg_len("é€") == 2
    text = "😀" * 3000  # 3,000 characters, 6,000 UTF-16 code units
    parts = split_text(text)
    assert [tg_len(p) for p in parts] == [4096, 1904]
    assert "".join(parts) == text


def test_a_combining_mark_stays_with_its_letter() -> None:
    text = "a" * TEXT_LIMIT + "\u0301" + "b"
    first, second = split_text(text)
    assert first == "a" * (TEXT_LIMIT - 1) and second == "a\u0301b"


def test_what_does_not_fit_is_cut_with_a_marker_saying_how_much() -> None:
    text = "z" * 20_000
    first, last = split_text(text, max_parts=2)
    assert first == "z" * TEXT_LIMIT and tg_len(last) <= TEXT_LIMIT
    shown, marker = last.rsplit("\n", 1)
    match = re.fullmatch(r"… \(truncated, ([\d,]+) more characters\)", marker)
    assert match is not None
    omitted = int(match.group(1).replace(",", ""))
    assert len(first) + len(shown) + omitted == len(text)
    assert split_text("a\n" * 5000, max_parts=1)[0].endswith("more characters)")


def test_a_blank_text_is_never_sent_blank() -> None:
    assert split_text(" \n\t ") == [BLANK]


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_parts"):
        split_text("x", max_parts=0)


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(["a", "b", " ", "\n", "😀", "é", "\u200d", "\u0301", "中"]),
        max_size=12_000,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_every_part_fits_and_is_not_blank(text: str, max_parts: int) -> None:
    parts = split_text(text, max_parts=max_parts)
    assert 1 <= len(parts) <= max_parts
    assert all(0 < utf16(p) <= TEXT_LIMIT and p.strip() for p in parts)
    assert tg_len(text) == utf16(text)
    if not text.strip():
        assert parts == [BLANK]
    elif not parts[-1].endswith(" more characters)"):
        # Nothing was cut: every character but the whitespace at the cuts arrived, in order.
        def squeeze(t: str) -> str:
            return t.replace(" ", "").replace("\n", "")

        assert squeeze("".join(parts)) == squeeze(text)

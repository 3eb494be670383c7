"""Telegram's limit on a message's text, and splitting a long text into messages that fit.

``sendMessage`` takes "1-4096 characters after entities parsing". The bot sends plain text (no
``parse_mode``), so the text as sent is what Telegram counts, and there is no tag or entity a
cut could break; a parse mode added later must teach ``split_text`` its syntax first. Telegram
measures text in UTF-16 code units (entity offsets and lengths are UTF-16, and an emoji outside
the Basic Multilingual Plane counts twice), so ``tg_len`` counts the same way: a part that fits
here fits however a server or client counts. Telegram strips leading and trailing whitespace and
refuses a blank text, so parts are stripped and never blank.
"""

from __future__ import annotations

import unicodedata

#: The most UTF-16 code units one message's text may hold.
TEXT_LIMIT = 4096

#: What a blank text is sent as (Telegram refuses an empty message).
BLANK = "(no text)"

# Characters that belong to the one before them: cutting before one splits what a reader sees
# as one character (a zero-width joiner, a variation selector).
_JOINERS = frozenset("\u200d\ufe0e\ufe0f")


def tg_len(text: str) -> int:
    """Return the length of ``text`` as Telegram counts it (UTF-16 code units)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def truncation_marker(omitted: int) -> str:
    """Return the line that ends a cut text: how many characters of it were not sent."""
    return f"… (truncated, {omitted:,} more characters)"


def split_text(text: str, *, limit: int = TEXT_LIMIT, max_parts: int = 4) -> list[str]:
    """Return ``text`` as at most ``max_parts`` non-blank parts of at most ``limit`` units each.

    Parts end at a line break where one fits, else at a space, else anywhere but inside a
    character. What does not fit in ``max_parts`` parts is cut: the last part ends with
    ``truncation_marker`` saying how many characters were left out. Nothing is dropped silently.
    """
    if max_parts < 1 or limit < 64:
        raise ValueError(
            f"split_text needs max_parts >= 1 and limit >= 64 (got {max_parts}, {limit})"
        )
    rest = text.strip()
    if not rest:
        return [BLANK]
    parts: list[str] = []
    while rest:
        if len(parts) == max_parts - 1 and tg_len(rest) > limit:
            parts.append(_truncated(rest, limit))
            break
        piece, rest = _first_piece(rest, limit)
        parts.append(piece)
    return parts


def _truncated(text: str, limit: int) -> str:
    # Room for the marker is reserved for the largest count it could show (all of ``text``).
    room = limit - tg_len(truncation_marker(len(text))) - 1
    piece, _ = _first_piece(text, room)
    return f"{piece}\n{truncation_marker(len(text) - len(piece))}"


def _first_piece(text: str, room: int) -> tuple[str, str]:
    """Split the stripped ``text`` into a non-blank head that fits ``room`` and the rest."""
    fit = _fitting(text, room)
    if fit == len(text):
        return text, ""
    # A break character at index ``fit`` may end the head: it is dropped, not sent.
    window = text[: fit + 1]
    cut = window.rfind("\n")
    if cut <= 0:
        cut = max(window.rfind(" "), window.rfind("\t"))
    if cut > 0:
        return text[:cut].rstrip(), text[cut + 1 :].lstrip()
    cut = fit
    while cut > 1 and (text[cut] in _JOINERS or unicodedata.combining(text[cut])):
        cut -= 1
    return text[:cut], text[cut:].lstrip()


def _fitting(text: str, room: int) -> int:
    """Return how many leading characters of ``text`` fit in ``room`` UTF-16 code units."""
    if len(text) <= room // 2:
        return len(text)  # even all astral, it fits
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > room:
            return i
    return len(text)

"""The spill file of refused durable publishes: written whole, read back, re-sent once."""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.bus import _spill
from levibot.bus._delivery import error_text

pytestmark = pytest.mark.anyio


def items(*ids: int) -> list[_spill.Item]:
    return [(f"ns.lb.order.intent.{i}", bytes([i, 0xFF]), {"Nats-Msg-Id": f"m{i}"}) for i in ids]


def test_spilled_items_read_back_byte_for_byte_and_a_torn_line_is_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spill" / "lb_exec.jsonl"
    _spill.append_sync(path, items(1, 2), "APIError: maximum messages exceeded")
    with open(path, "ab") as fh:
        fh.write(b'{"subject": "torn')  # a crash in the middle of a write
    back = _spill.read(path)
    assert [e.item() for e in back] == items(1, 2)
    assert back[0].error == "APIError: maximum messages exceeded"


async def test_resend_stops_at_the_first_refusal_and_keeps_the_rest_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lb_exec.jsonl"
    await _spill.append(path, items(1, 2, 3), "refused")
    sent: list[str] = []

    async def publish(subject: str, data: bytes, headers: dict[str, str]) -> None:
        if headers["Nats-Msg-Id"] == "m2":
            raise TimeoutError("still refused")
        sent.append(headers["Nats-Msg-Id"])

    assert await _spill.resend(path, publish) == (1, 2)
    assert sent == ["m1"]  # m3 would overtake m2: not tried
    await _spill.append(path, items(4), "refused")  # the node spills on meanwhile
    [left, newer] = _spill.pending(path)
    assert [e.item() for e in _spill.read(left)] == items(2, 3)
    assert _spill.read(left)[0].error == "TimeoutError: still refused"
    assert newer == path and [e.item() for e in _spill.read(path)] == items(4)
    sent.clear()

    async def accept(subject: str, data: bytes, headers: dict[str, str]) -> None:
        sent.append(headers["Nats-Msg-Id"])

    assert await _spill.resend(path, accept) == (3, 0)
    assert sent == ["m2", "m3", "m4"]  # oldest first
    assert _spill.pending(path) == []


async def test_a_resend_interrupted_midway_is_picked_up_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "lb_exec.jsonl"
    await _spill.append(path, items(1), "refused")
    path.rename(path.with_name(f"{path.name}.1{_spill._RESEND}"))  # as a crashed resend leaves it
    await _spill.append(path, items(2), "refused")
    sent: list[str] = []

    async def publish(subject: str, data: bytes, headers: dict[str, str]) -> None:
        sent.append(headers["Nats-Msg-Id"])

    assert await _spill.resend(path, publish) == (2, 0)
    assert sent == ["m1", "m2"]  # the older file first
    assert _spill.pending(path) == []


def test_error_text_is_one_line_with_the_type_and_bounded() -> None:
    text = error_text(ValueError("bad\nvalue " + "x" * 1000))
    assert text.startswith("ValueError: bad value ") and "\n" not in text
    assert len(text) == 500 and text.endswith("...")

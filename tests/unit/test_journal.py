"""The file journal: round trip, torn tails, garbage, rotation, fsync policies."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from levibot.messages import Alert, AlertLevel, Fill, SetKillSwitch, Side, Tick
from levibot.storage.journal import (
    HEADER,
    Journal,
    JournalError,
    JournalReader,
    frame,
    segments,
)


def ticks(n: int, start: int = 0) -> list[Tick]:
    return [
        Tick(
            ts_event=1_700_000_000_000_000_000 + i,
            ts_init=i,
            symbol="BTCUSDT",
            venue="binance",
            price=30_000.0 + i,
            size=0.01 * (i + 1),
            trade_id=i,
        )
        for i in range(start, start + n)
    ]


def test_journal_round_trips_messages_of_every_kind_in_order(tmp_path: Path) -> None:
    msgs = [
        *ticks(3),
        Fill(
            ts_event=5,
            ts_init=6,
            ts_ingress=4,
            symbol="ETHUSDT",
            fill_id="f1",
            client_order_id="o1",
            side=Side.SELL,
            quantity=2.0,
            price=2000.0,
            fee=0.4,
        ),
        SetKillSwitch(ts_event=7, ts_init=7, command_id="c1", on=True, issued_by="alice"),
        Alert(
            ts_event=8,
            ts_init=8,
            alert_id="a1",
            level=AlertLevel.WARNING,
            source="risk",
            text="drawdown 5%",
        ),
    ]
    with Journal(tmp_path) as j:
        j.append(msgs[0])
        j.append_many(msgs[1:])
    reader = Journal.read(tmp_path)
    assert list(reader) == msgs
    assert reader.count == len(msgs)
    assert reader.bad == []


def test_journal_appends_across_reopen(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append_many(ticks(5))
    with Journal(tmp_path) as j:
        j.append_many(ticks(5, start=5))
    assert [m.trade_id for m in Journal.read(tmp_path)] == list(range(10))  # type: ignore[attr-defined]
    assert len(segments(tmp_path)) == 1


def test_torn_tail_is_truncated_on_open_and_appends_continue(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append_many(ticks(10))
    seg = segments(tmp_path)[0]
    whole = seg.read_bytes()
    # A crash in the middle of the last frame: only part of it reached the disk.
    seg.write_bytes(whole[:-7])
    reader = Journal.read(tmp_path)
    assert len(list(reader)) == 9
    assert [b.reason for b in reader.bad] == ["torn"]

    j = Journal(tmp_path)
    assert len(j.truncated) == 1 and "torn" in j.truncated[0].reason
    cut = len(whole) - len(frame(msgspec.msgpack.encode(ticks(1, start=9)[0])))
    assert seg.stat().st_size == cut
    j.append_many(ticks(1, start=100))
    j.close()
    reader = Journal.read(tmp_path)
    assert [m.trade_id for m in reader] == [*range(9), 100]  # type: ignore[attr-defined]
    assert reader.bad == []


def test_torn_header_alone_is_truncated(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append_many(ticks(2))
    seg = segments(tmp_path)[0]
    with open(seg, "ab") as fh:
        fh.write(HEADER.pack(b"\xb1\x0b", 100, 0)[:5])
    j = Journal(tmp_path)
    j.close()
    assert len(list(Journal.read(tmp_path))) == 2


def test_garbage_record_is_counted_skipped_and_reported_with_its_offset(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append_many(ticks(5))
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    size = len(frame(msgspec.msgpack.encode(ticks(1)[0])))
    # Flip payload bytes of the third record: its CRC no longer matches.
    data[2 * size + HEADER.size + 3] ^= 0xFF
    seg.write_bytes(bytes(data))
    reader = JournalReader(tmp_path)
    assert [m.trade_id for m in reader] == [0, 1, 3, 4]  # type: ignore[attr-defined]
    assert len(reader.bad) == 1
    assert reader.bad[0].offset == 2 * size
    assert reader.bad[0].reason == "bad crc"
    assert reader.bad[0].path == str(seg)


def test_valid_frame_of_an_unknown_type_is_skipped_with_a_reason(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(ticks(1)[0])
        j._append_frame(frame(msgspec.msgpack.encode({"type": "levibot.Nope", "x": 1})))
        j._append_frame(frame(b"\xc1not msgpack"))
        j.append(ticks(1, start=1)[0])
    reader = Journal.read(tmp_path)
    assert [m.trade_id for m in reader] == [0, 1]  # type: ignore[attr-defined]
    assert len(reader.bad) == 2
    assert all(b.reason.startswith("undecodable") for b in reader.bad)


def test_garbage_between_frames_is_skipped_up_to_the_next_frame(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append(ticks(1)[0])
    seg = segments(tmp_path)[0]
    first = seg.read_bytes()
    with open(seg, "ab") as fh:
        fh.write(b"\x00garbage\xb1\x0b\xff\xff")  # includes a false magic
        fh.write(frame(msgspec.msgpack.encode(ticks(1, start=1)[0])))
    reader = Journal.read(tmp_path)
    assert [m.trade_id for m in reader] == [0, 1]  # type: ignore[attr-defined]
    assert [(b.offset, b.reason) for b in reader.bad] == [(len(first), "bad magic")]
    # Garbage in the middle is not a torn tail: opening keeps everything.
    assert Journal(tmp_path).truncated == []


def test_segments_rotate_by_size_and_read_back_in_order(tmp_path: Path) -> None:
    one = len(frame(msgspec.msgpack.encode(ticks(1)[0])))
    with Journal(tmp_path, segment_bytes=one * 10) as j:
        for i in range(0, 95, 5):
            j.append_many(ticks(5, start=i))
            j.flush()
    segs = segments(tmp_path)
    assert len(segs) == 10
    assert all(s.stat().st_size <= one * 10 for s in segs)
    assert [m.trade_id for m in Journal.read(tmp_path)] == list(range(95))  # type: ignore[attr-defined]
    # A single segment file reads on its own too.
    assert len(list(Journal.read(segs[0]))) == 10


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_every_fsync_policy_writes_a_readable_journal(tmp_path: Path, policy: str) -> None:
    j = Journal(tmp_path, fsync=policy)  # type: ignore[arg-type]
    j.append(ticks(1)[0])
    if policy == "always":
        assert j.pending_bytes == 0  # written at once
    else:
        assert j.pending_bytes > 0
    j.close()
    assert len(list(Journal.read(tmp_path))) == 1


def test_bad_fsync_policy_and_missing_journal_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="fsync"):
        Journal(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="no journal"):
        list(Journal.read(tmp_path / "missing"))


def test_prepend_puts_messages_before_existing_segments(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.append_many(ticks(3, start=10))
        j.flush()
        j.prepend(ticks(2))
    assert [m.trade_id for m in Journal.read(tmp_path)] == [0, 1, 10, 11, 12]  # type: ignore[attr-defined]

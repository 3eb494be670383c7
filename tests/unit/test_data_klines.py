"""Loading OHLCV CSVs: timestamp formats, the bad-row rule, gaps, the round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from levibot.data import (
    Klines,
    KlinesError,
    find_gaps,
    load_klines,
    parse_timestamp,
    write_klines_csv,
)

H = 3_600_000_000_000
T0_S = 1_502_942_400  # 2017-08-17 04:00:00 UTC
T0 = T0_S * 1_000_000_000


def write(tmp_path: Path, text: str, name: str = "ETHUSDT-1h.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text",
    [str(T0_S), str(T0_S * 1000), str(T0_S * 1_000_000), str(T0),
     "2017-08-17 04:00:00", "2017-08-17T04:00:00Z", "2017-08-17T06:00:00+02:00",
     "2017-08-17T04:00:00.000000"],
)  # fmt: skip
def test_parse_timestamp_reads_epoch_units_and_iso_as_utc(text: str) -> None:
    assert parse_timestamp(text) == T0


def test_load_klines_reads_the_documented_format_with_comments_and_extra_columns(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "# a comment\n"
        "timestamp,open,high,low,close,volume,trades\n"
        f"{T0_S * 1000},1.5,2.0,1.0,1.75,10,3\n"
        "\n"
        f"{(T0 + H) // 1_000_000},1.75,1.8,1.7,1.7,0,0\n",
    )
    k = load_klines(path)
    assert k.symbol == "ETHUSDT"
    assert k.ts.dtype == np.int64 and k.ts.tolist() == [T0, T0 + H]
    assert k.open.tolist() == [1.5, 1.75] and k.volume.tolist() == [10.0, 0.0]
    assert (k.timeframe, k.n_dropped) == ("1h", 0)


def test_load_klines_accepts_the_raw_gapless_format_date_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# Binance Spot Market Data\ndate,open,high,low,close,volume,close_time\n"
        "2017-08-17 04:00:00,4261.48,4313.62,4261.32,4308.83,47.181009,2017-08-17 04:59:59\n",
        name="binance_spot_BTCUSDT-1h.csv",
    )
    k = load_klines(path)
    assert (k.symbol, k.ts.tolist(), k.close.tolist()) == ("BTCUSDT", [T0], [4308.83])


BAD = (
    "timestamp,open,high,low,close,volume\n"
    f"{T0_S},10,11,9,10.5,1\n"  # line 2: ok
    f"{T0_S + 3600},nan,11,9,10,1\n"  # 3: non_finite
    f"{T0_S + 3600},10,inf,9,10,1\n"  # 4: non_finite
    f"{T0_S + 3600},10,11,9,10,-1\n"  # 5: negative volume
    f"{T0_S + 3600},-10,11,9,10,1\n"  # 6: negative price
    f"{T0_S + 3600},10,9,11,10,1\n"  # 7: high < low
    f"{T0_S + 3600},10,11,9,12,1\n"  # 8: close above high
    f"{T0_S + 3600},ten,11,9,10,1\n"  # 9: malformed
    f"{T0_S + 3600},10,11\n"  # 10: malformed (short)
    f"not-a-time,10,11,9,10,1\n"  # 11: malformed
    f"{T0_S + 3600},10,11,9,10,1\n"  # 12: ok
    f"{T0_S + 3600},10,11,9,10,2\n"  # 13: duplicate
    f"{T0_S},10,11,9,10,1\n"  # 14: out_of_order
    f"{T0_S + 7200},10,11,9,10,0\n"  # 15: ok (zero volume is a valid bar)
)


def test_bad_rows_are_dropped_counted_and_reported_by_line(tmp_path: Path) -> None:
    k = load_klines(write(tmp_path, BAD))
    assert k.ts.tolist() == [T0, T0 + H, T0 + 2 * H]
    assert k.volume.tolist() == [1.0, 1.0, 0.0]  # the first of two duplicates wins
    assert k.dropped == {
        "non_finite": 2, "negative": 2, "inconsistent": 2, "malformed": 3,
        "duplicate": 1, "out_of_order": 1,
    }  # fmt: skip
    assert [(r.line, r.reason) for r in k.rejects] == [
        (3, "non_finite"), (4, "non_finite"), (5, "negative"), (6, "negative"),
        (7, "inconsistent"), (8, "inconsistent"), (9, "malformed"), (10, "malformed"),
        (11, "malformed"), (13, "duplicate"), (14, "out_of_order"),
    ]  # fmt: skip


def test_strict_mode_raises_with_the_line_number_of_the_first_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    with pytest.raises(KlinesError, match=r"ETHUSDT-1h.csv:3: bad row \(non_finite\)") as info:
        load_klines(path, strict=True)
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty file"), ("a,b,c\n1,2,3\n", "header must name"),
     ("timestamp,open,high,low,close\n", r"missing: volume")],
)  # fmt: skip
def test_unusable_file_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(KlinesError, match=match):
        load_klines(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KlinesError, match="cannot read"):
        load_klines(tmp_path / "nope.csv")


def test_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KlinesError, match="UTF-8"):
        load_klines(path)


def test_find_gaps_reports_missing_runs_and_misalignment_without_inventing_bars(
    tmp_path: Path,
) -> None:
    hours = [0, 1, 2, 6, 7, 8.5, 9.5, 10, 11]  # 3 missing after 2; a shifted stretch
    rows = "".join(f"{T0_S + int(h * 3600)},1,1,1,1,1\n" for h in hours)
    k = load_klines(write(tmp_path, "timestamp,open,high,low,close,volume\n" + rows))
    gaps = find_gaps(k)
    assert [(g.prev, g.next, g.missing, g.kind) for g in gaps] == [
        (T0 + 2 * H, T0 + 6 * H, 3, "missing"),
        (T0 + 7 * H, T0 + int(8.5 * H), 1, "missing"),  # 1.5 h: the 08:00 bar is missing
        (T0 + int(9.5 * H), T0 + 10 * H, 0, "misaligned"),  # 0.5 h: back on the hour
    ]
    assert gaps[0].start == T0 + 3 * H
    assert "3 bars missing" in gaps[0].describe()
    assert len(k) == len(hours)  # nothing was filled in
    half_hour = [g.missing for g in find_gaps(k, interval_ns=H // 2)]
    assert half_hour[:3] == [1, 1, 7]  # at 30 min every hourly step misses one bar


def test_write_then_load_round_trips_exactly(tmp_path: Path) -> None:
    k = load_klines(write(tmp_path, BAD))
    out = tmp_path / "ETHUSDT-copy.csv"
    write_klines_csv(out, k)
    again = load_klines(out)
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert getattr(again, name).tolist() == getattr(k, name).tolist()
    assert out.read_text().splitlines()[0] == "timestamp,open,high,low,close,volume"


def _careful(path: Path) -> Klines:
    """``load_klines`` the row-by-row way only (the numpy path refused)."""
    from unittest.mock import patch

    from levibot.data import _klines

    with patch.object(_klines, "_load_plain", return_value=None):
        return load_klines(path)


def _same(a: Klines, b: Klines) -> None:
    for name in ("ts", "open", "high", "low", "close", "volume"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name  # to the bit
    assert a.dropped == b.dropped and a.rejects == b.rejects


PLAIN = "timestamp,open,high,low,close,volume\n" + "".join(
    f"{T0_S * 1000 + i * 3_600_000},{100 + i}.5,{102 + i}.25,{99 + i}.125,{101 + i}.0,1.5e{i % 3}\n"
    for i in range(50)
)


@pytest.mark.parametrize(
    "text",
    [
        PLAIN,  # the numpy path
        PLAIN.rstrip("\n"),  # no newline at the end
        PLAIN.replace("\n", "\n\n", 3),  # blank lines
        "# a comment\n" + PLAIN,
        PLAIN + "# a comment at the end\n",
        PLAIN.replace(",101.0,", ",1_01.0,", 1),  # float() takes underscores: careful path
        PLAIN + f"{T0_S * 1000 + 60 * 3_600_000},1,2,0.5,1.5,nan\n",  # non_finite
        PLAIN + f"{T0_S * 1000 + 60 * 3_600_000},1,2,0.5,3,1\n",  # inconsistent
        PLAIN + f"{T0_S * 1000},1,2,0.5,1.5,1\n",  # out of order
        PLAIN + f"+{T0_S * 1000 + 60 * 3_600_000},1,2,0.5,1.5,1\n",  # '+': malformed
        PLAIN + f"{T0_S * 1000 + 60 * 3_600_000}.0,1,2,0.5,1.5,1\n",  # float epoch: malformed
        PLAIN + f"{T0_S * 1000 + 60 * 3_600_000},1,2,0.5\n",  # missing fields
        PLAIN + f"{T0_S * 1000 + 60 * 3_600_000},1,,0.5,1.5,1\n",  # empty field
        PLAIN.replace("\n", "\r\n"),  # Windows line ends
        PLAIN.replace(f"{T0_S * 1000}", f"{T0_S}", 1),  # seconds then milliseconds
        f"time,volume,open,high,low,close\n{T0_S},1,1,2,0.5,1.5\n{T0_S + 3600},1,1,2,0.5,1.5\n",
        f"timestamp,open,high,low,close,volume\n{10**12 * 10**6},1,2,0.5,1.5,1\n",  # ns
        f"timestamp,open,high,low,close,volume\n-{T0_S},1,2,0.5,1.5,1\n",
        "timestamp,open,high,low,close,volume\n99999999999,1,2,0.5,1.5,1\n",  # no int64 in ns
    ],
)
def test_the_numpy_path_loads_exactly_what_the_careful_path_loads(
    tmp_path: Path, text: str
) -> None:
    path = write(tmp_path, text)
    _same(load_klines(path), _careful(path))


def test_a_clean_file_takes_the_numpy_path_and_a_bad_one_does_not(tmp_path: Path) -> None:
    from levibot.data._klines import _header_index, _load_plain

    cols = _header_index(tmp_path, ["timestamp", "open", "high", "low", "close", "volume"], 1)
    assert _load_plain(PLAIN, cols) is not None
    assert _load_plain(PLAIN + f"{T0_S * 1000},1,2,0.5,1.5,1\n", cols) is None  # out of order
    assert _load_plain(PLAIN.replace(",1.5e0\n", ",-1\n", 1), cols) is None  # negative volume


def test_the_real_history_loads_the_same_both_ways() -> None:
    from levibot.data import ensure_btcusdt

    path = ensure_btcusdt(None, False)
    _same(load_klines(path), _careful(path))


def test_a_time_no_int64_holds_in_ns_is_a_malformed_row_not_a_crash(tmp_path: Path) -> None:
    text = PLAIN + "99999999999,1,2,0.5,1.5,1\n"  # seconds in the year 5138: 1e20 ns
    k = load_klines(write(tmp_path, text))  # before: OverflowError building the array
    assert len(k) == 50 and k.dropped == {"malformed": 1}

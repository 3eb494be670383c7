"""``levibot features INPUT.csv -o OUTPUT.csv`` through the real CLI entry point."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from levibot.cli import main
from levibot.data import ensure_btcusdt
from levibot.features import SCHEMA, compute_batch

ROWS = SCHEMA.warmup + 60


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first rows of the real BTCUSDT file, with bad rows mixed in."""
    lines = ensure_btcusdt(progress=False).read_text().splitlines()
    header, body = lines[0], lines[1 : ROWS + 1]
    assert header.startswith("timestamp,open,high,low,close,volume")
    bad = [
        body[59],  # a repeat of the row just before
        body[2],  # an older row
        body[50].replace(body[50].split(",")[4], "nan", 1),  # close NaN
    ]
    rows = [*body[:60], *bad, *body[60:]]
    path = tmp_path_factory.mktemp("features") / "BTCUSDT-1h.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def read_output(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    rows = list(reader)
    ts = np.array([int(r[0]) for r in rows])
    values = np.array([[float(x) if x else math.nan for x in r[1:]] for r in rows])
    return header, ts, values


def expected(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text().splitlines()[1:]
    good = [line.split(",") for line in lines if "nan" not in line]
    seen: set[str] = set()
    kept = []
    last = -1
    for fields in good:
        t = int(fields[0])
        if t <= last or fields[0] in seen:
            continue
        seen.add(fields[0])
        last = t
        kept.append(fields)
    arr = np.array([[float(x) for x in f[1:6]] for f in kept])
    return np.array([int(f[0]) for f in kept]), compute_batch(*arr.T)


def test_cli_writes_every_feature_column_bit_for_bit(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "features.csv"
    assert main(["features", str(sample), "-o", str(out)]) == 0
    header, ts, values = read_output(out.read_text())
    assert header == ["timestamp", *SCHEMA.names]
    want_ts, want = expected(sample)
    assert ts.tolist() == want_ts.tolist() and len(ts) == ROWS
    assert np.array_equal(values, want, equal_nan=True)  # repr round-trips exactly
    # Warm-up cells are empty, not "nan"; after warm-up every cell holds a number.
    assert np.isnan(values[: SCHEMA.warmup - 1]).any(axis=1).all()
    assert np.isfinite(values[SCHEMA.warmup - 1 :]).all()
    err = capsys.readouterr().err
    assert f"{ROWS} rows x {len(SCHEMA.names)} features" in err
    assert SCHEMA.hash in err
    assert "1 duplicate" in err and "1 out_of_order" in err and "1 non_finite" in err


def test_cli_writes_to_stdout_with_a_dash(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", str(sample), "-o", "-"]) == 0
    header, ts, _ = read_output(capsys.readouterr().out)
    assert len(header) == len(SCHEMA.names) + 1 and len(ts) == ROWS


def test_cli_reports_a_file_without_ohlcv_columns_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,price\n1,2\n")
    assert main(["features", str(bad), "-o", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "levibot: error:" in err and "open" in err
    assert not (tmp_path / "out.csv").exists()


def test_cli_reports_an_unwritable_output_cleanly(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing-dir" / "out.csv"
    assert main(["features", str(sample), "-o", str(target)]) == 2
    assert "cannot write" in capsys.readouterr().err

"""``levibot backtest`` and ``levibot replay`` end to end on a small synthetic kline file."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import msgspec
import pytest

from levibot.cli import main
from levibot.messages import Fill, OrderIntent

BARS = 1000


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands configure structlog for a terminal; leave the test session's setup alone.
    monkeypatch.setattr("levibot.logging.configure", lambda *a, **k: None)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A sine-wave market: the 12/26 EMAs cross every few dozen bars."""
    path = tmp_path / "SYNTH-1h.csv"
    rows = ["timestamp,open,high,low,close,volume"]
    prev = 100.0
    for i in range(BARS):
        close = 100.0 + 10.0 * math.sin(i / 15.0) + 0.01 * i
        hi, lo = max(prev, close) + 0.5, min(prev, close) - 0.5
        rows.append(f"{1_600_000_000_000 + i * 3_600_000},{prev},{hi},{lo},{close},10")
        prev = close
    path.write_text("\n".join(rows) + "\n")
    return path


def test_backtest_writes_a_report_trades_and_an_equity_png(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main([
        "backtest", "--data", str(data), "--symbol", "SYNTH", "--strategy", "ema_cross",
        "--param", "fast=12", "--param", "slow=26", "--cash", "5000", "--fee-bps", "5",
        "--fill", "close", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bars"] == BARS
    assert report["trades"] >= 6
    assert report["initial_cash"] == 5000.0
    assert report["return"] == pytest.approx(report["final_equity"] / 5000.0 - 1.0)
    assert 0.0 < report["exposure"] < 1.0
    assert 0.0 <= report["win_rate"] <= 1.0
    assert report["fees"] > 0
    assert report["first_ts"] == "2020-09-13 12:26:40"
    assert report["config"]["spec"]["fill"] == "close"
    assert report["config"]["actors"]["scoring"]["ema_cross"] == {"fast": 12, "slow": 26}
    assert report["config"]["actors"]["risk"]["preset"] == "off"
    with (out / "trades.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    closed = [r for r in rows if r["exit_reason"] != "open"]
    assert len(closed) == report["trades"]
    assert sum(float(r["pnl"]) > 0 for r in closed) / len(closed) == report["win_rate"]
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"final_equity"' in capsys.readouterr().out


def test_backtest_refuses_an_unknown_strategy_cleanly(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", "--data", str(data), "--strategy", "magic", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown strategy 'magic'" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_backtest_refuses_a_missing_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path)])
    assert code == 2
    assert "data file not found" in capsys.readouterr().err


def test_replay_writes_the_orders_and_fills_of_a_data_file(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[scoring]\nstrategies = ["ema_cross"]\n[risk]\npreset = "off"\nsizing = "all_in"\n'
        'atr_exits = false\n[order]\nfill = "next_open"\n'
    )
    out = tmp_path / "replay"
    code = main([
        "replay", "--config", str(config), "--data", str(data), "--symbol", "SYNTH",
        "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    intents = [
        msgspec.json.decode(line, type=OrderIntent)
        for line in (out / "orders.jsonl").read_bytes().splitlines()
    ]
    fills = [
        msgspec.json.decode(line, type=Fill)
        for line in (out / "fills.jsonl").read_bytes().splitlines()
    ]
    assert len(intents) >= 12
    assert [f.client_order_id for f in fills] == [i.client_order_id for i in intents][: len(fills)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bars"] == BARS
    assert summary["files"]["fills.jsonl"] == len(fills)


def test_replay_of_a_missing_journal_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", "--journal", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert code == 2
    assert "no journal" in capsys.readouterr().err

"""``levibot run`` on a terminal shows a live status line; piped, its logs are JSON lines as before.

The real command runs as a child process on the real BTCUSDT bars (feed → feature → scoring →
risk → order, replayed), once on a pseudo-terminal (the pty module) and once with pipes.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from levibot.data import ensure_btcusdt
from levibot.testing import write_config

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "c.toml",
        {
            "node": {
                "replay": True, "http_port": 0, "stop_when_sources_done": True,
                "groups": ["all"], "drain_timeout_s": 10.0,
            },
            "storage": {"data_dir": str(tmp_path / "data")},
            "groups": {"all": ["feed", "feature", "scoring", "risk", "order"]},
            "feed": {"source": "replay"},
            # 500 real bars at 250 bars a second: about two seconds of status line.
            "feed.replay": {"path": str(ensure_btcusdt(progress=False)), "limit": 500,
                            "speed": 900_000.0},
            "scoring": {"strategies": ["ema_cross"]},
            "risk": {"preset": "normal", "sizing": "all_in", "persist": False},
            "order": {"fill": "next_open", "persist": False},
        },
    )  # fmt: skip


def run_on_a_terminal(cfg: Path, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``levibot run`` with a pseudo-terminal as stdin, stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 220, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "levibot", "run", "--config", str(cfg), *args],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
        env={**os.environ, "TERM": "xterm-256color", "LEVIBOT__LOG__FORMAT": "auto"},
    )  # fmt: skip
    os.close(follower)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return code, out.decode(errors="replace")


def test_on_a_terminal_a_status_line_shows_rates_latency_equity_and_the_last_signal(
    tmp_path: Path,
) -> None:
    code, out = run_on_a_terminal(config(tmp_path))
    assert code == 0, out[-3000:]
    screen = ANSI.sub("", out)
    lines = [line for line in re.split(r"[\r\n]+", screen) if "msg/s" in line]
    assert len(lines) >= 3, screen[-3000:]  # redrawn several times while it ran
    last = lines[-1]
    assert any(line.startswith("● replay") for line in lines)  # while it ran
    assert last.startswith("■ stopped")  # the last reading, once the node stopped
    for part in ("msg/s", "signals", "fills", "handle p95", "equity", "last BTCUSDT"):
        assert part in last, (part, last)
    assert re.search(r"last BTCUSDT (LONG|SHORT) p=0\.\d\d @ [\d,]+\.\d\d \(ema_cross\)", last)
    equity = float(re.search(r"equity ([\d,]+\.\d\d)", last)[1].replace(",", ""))  # type: ignore[index]
    assert equity > 0
    assert any(int(re.search(r"([\d,]+) msg/s", x)[1].replace(",", "")) > 0 for x in lines)  # type: ignore[index]
    # The logs still show, above the line (the console renderer on a terminal).
    assert "node.ready" in screen and "node.stopped" in screen
    assert screen.rindex("msg/s") > screen.rindex("node.stopped")  # the line stays at the foot


def test_without_a_terminal_the_logs_are_json_lines_and_there_is_no_status_line(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "levibot", "run", "--config", str(config(tmp_path))],
        capture_output=True, timeout=60, env={**os.environ, "LEVIBOT__LOG__FORMAT": "auto"},
    )  # fmt: skip
    err, out = result.stderr.decode(), result.stdout.decode()
    assert result.returncode == 0, err[-3000:]
    events = [json.loads(line)["event"] for line in err.splitlines() if line.strip()]
    assert "node.ready" in events and "node.stopped" in events
    assert "msg/s" not in err + out and "\x1b[" not in err + out


def test_no_status_turns_it_off_on_a_terminal(tmp_path: Path) -> None:
    code, out = run_on_a_terminal(config(tmp_path), "--no-status")
    assert code == 0, out[-3000:]
    assert "node.stopped" in out and "msg/s" not in out

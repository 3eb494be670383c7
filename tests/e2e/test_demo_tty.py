"""``levibot demo`` end to end: on a terminal it prints a one-time link and a live status line; the
link opens the Mini App as admin in Chromium, with the replay's candles, signals and fills.

The real command runs as a child process on a pseudo-terminal, on the real BTCUSDT bars (the
cached CSV, copied: no download), with the rule strategy ``ema_cross`` (no model to train).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.async_api import async_playwright, expect

from levibot.data import ensure_btcusdt
from levibot.testing import free_port, write_config
from tests.e2e.test_miniapp_browser import ARGS, ARTIFACTS, CHROMIUM, watch_console
from tests.e2e.test_statusline_tty import ANSI

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class Terminal:
    """A child process on a pseudo-terminal, its output collected as it comes."""

    def __init__(self, *argv: str) -> None:
        import fcntl
        import pty
        import struct
        import subprocess
        import termios

        self.leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 240, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=follower, stdout=follower, stderr=follower, close_fds=True,
            env={**os.environ, "TERM": "xterm-256color", "LEVIBOT__LOG__FORMAT": "auto"},
        )  # fmt: skip
        os.close(follower)
        os.set_blocking(self.leader, False)
        self.raw = b""

    @property
    def screen(self) -> str:
        """What was written so far, without the terminal's control sequences."""
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def read(self) -> None:
        try:
            while chunk := os.read(self.leader, 65536):
                self.raw += chunk
        except (BlockingIOError, OSError):  # nothing more now; EIO once the child is gone
            pass

    async def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            found = re.search(pattern, self.screen)
            if found:
                return found
            if self.proc.poll() is not None:
                break
            await anyio.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in: {self.screen[-3000:]}")

    async def stop(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read()
            await anyio.sleep(0.1)
        self.read()
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.leader)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        await browser.close()


async def test_levibot_demo_prints_a_link_that_opens_the_app_as_admin_once(
    tmp_path: Path, browser: Any
) -> None:
    import sys

    (tmp_path / "data").mkdir()
    cached = ensure_btcusdt(progress=False)
    shutil.copy(cached, tmp_path / "data" / cached.name)  # levibot demo finds it there
    port = free_port()
    cfg = write_config(
        tmp_path / "c.toml",
        {
            "node": {"http_port": 0},
            "storage": {"data_dir": str(tmp_path)},
            "gateway": {"port": port, "heartbeat_s": 1.0},
            "scoring": {"strategies": ["ema_cross"]},
        },
    )
    term = Terminal(
        sys.executable, "-m", "levibot", "demo", "--config", str(cfg), "--no-train",
        "--speed", "360000",  # a hundred 1h bars a second
    )  # fmt: skip
    try:
        link = (await term.wait_for(rf"http://127\.0\.0\.1:{port}/app#demo=[A-Za-z0-9_-]+"))[0]
        await term.wait_for(r"● replay +[\d,]+ msg/s .* equity [\d,]+\.\d\d")

        page = await browser.new_page(viewport={"width": 900, "height": 1100})
        page.set_default_timeout(20_000)
        problems = watch_console(page)
        await page.goto(link)
        await page.wait_for_selector("body[data-auth=admin]")
        price = page.locator("#price-chart")
        await expect(price).to_have_attribute("data-symbol", "BTCUSDT")
        await expect(price).to_have_attribute("data-bars", re.compile(r"^[1-9]\d*$"))
        # Candles arrive live over /ws while the replay runs; the trades get their marks.
        await expect(price).to_have_attribute("data-markers", re.compile(r"^[1-9]\d*$"))
        await expect(page.locator("#equity-chart")).to_have_attribute(
            "data-points", re.compile(r"^[1-9]\d*$")
        )
        bars = int(await price.get_attribute("data-bars") or 0)
        await expect(price).not_to_have_attribute("data-bars", str(bars))  # still moving
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "levibot_demo.png"), full_page=True)
        assert problems == [], problems

        again = await browser.new_page()
        await again.goto(link)
        await again.wait_for_selector("body[data-auth=refused]")
        assert "(token_spent)" in (await again.text_content("#refusal-text") or "")

        code = await term.stop()
        assert code == 0, term.screen[-3000:]
        lines = [x for x in re.split(r"[\r\n]+", term.screen) if "msg/s" in x]
        assert lines[-1].startswith("■ stopped"), lines[-1]
        assert re.search(r"last BTCUSDT (LONG|SHORT) .*\(ema_cross\)", lines[-1]), lines[-1]
    finally:
        term.close()

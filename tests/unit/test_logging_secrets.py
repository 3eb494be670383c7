"""A logged exception never carries local variables: they can hold DSNs and tokens."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import structlog
from levibot.logging import configure
configure("info", {fmt!r})
def connect():
    dsn = "postgresql://user:S3CRET-PASSWORD@db/levibot"
    raise ConnectionError("refused")
try:
    connect()
except ConnectionError:
    structlog.get_logger().exception("store.connect_failed")
"""


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_traceback_shows_the_frames_but_no_local_variables(fmt: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(fmt=fmt)], capture_output=True, text=True, check=True
    )
    assert "store.connect_failed" in out.stderr and "ConnectionError" in out.stderr
    assert "connect" in out.stderr  # the frame is there...
    assert "S3CRET-PASSWORD" not in out.stderr  # ...its locals are not

"""A private redis-server on a free port, for tests that kill and restart Redis.

The shared server on 6379 is never touched: this one runs from a temp directory without
persistence, and ``kill`` signals only the process it started, by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from levibot.testing import free_port, wait_until


class TempRedis:
    """``start``, ``kill`` (SIGKILL: a crash) and ``start`` again on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install the redis-server package")
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="levibot-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the server's ``redis://`` URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return False
        return True

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._listening, 10, f"redis-server on port {self.port}")

    def kill(self) -> None:
        """Kill the server with SIGKILL (no shutdown, no save) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        """Kill the server if it runs and delete its directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

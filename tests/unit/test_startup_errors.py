"""``explain``: whatever a start raised, one line that says what failed, why and where.

The failures are real ones (a closed port dialled by the real asyncpg and redis clients, a
real bind conflict, a real missing file), only the component they are attributed to is given.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from levibot.actors.feed import FeedConfig
from levibot.actors.store import StoreConfig
from levibot.errors import (
    EXIT_CANTCREAT,
    EXIT_NOINPUT,
    EXIT_SOFTWARE,
    EXIT_UNAVAILABLE,
    LevibotError,
    root_cause,
)
from levibot.feeds.config import ReplayConfig
from levibot.runtime.failure import address, explain
from levibot.settings import StorageConfig
from levibot.testing import free_port

pytestmark = pytest.mark.anyio


async def raised(coro: object) -> BaseException:
    try:
        await coro  # type: ignore[misc]
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


async def test_a_refused_postgresql_names_the_shared_setting_without_the_password() -> None:
    port = free_port()
    dsn = f"postgresql://postgres:pw@127.0.0.1:{port}/test"
    exc = await raised(asyncpg.connect(dsn, timeout=5))
    err = explain(
        exc, component="store", config=StoreConfig(), storage=StorageConfig(postgres_dsn=dsn)
    )
    assert err.exit_code == EXIT_UNAVAILABLE
    assert str(err) == (
        f"cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused ([storage] postgres_dsn)"
    )


async def test_a_refused_redis_inside_an_exception_group_is_found() -> None:
    port = free_port()
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    exc = await raised(client.ping())
    await client.aclose()
    group = ExceptionGroup("tasks", [ExceptionGroup("inner", [exc])])
    config = StoreConfig(redis_url=f"redis://127.0.0.1:{port}/0")
    err = explain(group, component="store", config=config)
    assert err.exit_code == EXIT_UNAVAILABLE
    assert str(err).startswith(f"cannot reach Redis at 127.0.0.1:{port}: ")
    assert str(err).endswith("([store] redis_url)")


async def test_a_wrapped_connection_error_is_traced_to_its_server() -> None:
    port = free_port()
    try:
        try:
            await asyncpg.connect(f"postgresql://u@127.0.0.1:{port}/x", timeout=5)
        except OSError as exc:
            raise LevibotError(f"cannot connect to PostgreSQL for API keys: {exc}") from None
    except LevibotError as exc:
        err = explain(exc, component="gateway")
    assert err.exit_code == EXIT_UNAVAILABLE
    assert str(err) == (
        "cannot reach PostgreSQL at the configured address: connection refused ([gateway])"
    )


async def test_a_bound_port_is_a_listen_error_on_the_component_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        loop = asyncio.get_running_loop()
        exc = await raised(loop.create_server(asyncio.Protocol, "127.0.0.1", port))
    err = explain(exc, component="gateway", config=type("C", (), {"port": port})())
    assert err.exit_code == EXIT_CANTCREAT
    assert str(err) == f"cannot listen on 127.0.0.1:{port}: address already in use ([gateway] port)"


def test_a_missing_file_names_the_setting_that_holds_its_path(tmp_path: Path) -> None:
    path = f"{tmp_path}/nosuch.csv"
    config = FeedConfig(replay=ReplayConfig(path=path))
    try:
        open(path)  # noqa: SIM115
    except OSError as exc:
        err = explain(exc, component="feed", config=config)
    assert err.exit_code == EXIT_NOINPUT
    assert str(err) == f"cannot open {path}: no such file or directory ([feed.replay] path)"


def test_anything_else_is_an_actor_that_failed_to_start() -> None:
    err = explain(RuntimeError("boom"), component="risk")
    assert err.exit_code == EXIT_SOFTWARE
    assert str(err) == "risk failed to start: RuntimeError: boom ([risk])"


def test_root_cause_prefers_a_real_exception_to_a_cancellation() -> None:
    inner = ValueError("x")
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), BaseExceptionGroup("h", [inner])])
    assert root_cause(group) is inner
    interrupt = KeyboardInterrupt()
    assert root_cause(BaseExceptionGroup("g", [interrupt])) is interrupt
    assert root_cause(inner) is inner


def test_addresses_never_show_credentials() -> None:
    assert address("postgresql://u:secret@db.example:6543/x", 5432) == "db.example:6543"
    assert address("redis://:pw@cache/0", 6379) == "cache:6379"
    assert address("nats://a:4222,nats://b:4222", 4222) == "a:4222"
    assert address("host=db password=secret", 5432) == "the configured address"

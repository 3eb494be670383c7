"""Turn whatever a node raised while starting into one line a user can act on.

``explain`` unwraps exception groups and exception chains down to the cause, and says what
failed (a port, a server, a file), why (``address already in use``, ``connection refused``) and
where it was configured (``[node] http_port``, ``[scoring] postgres_dsn``), as a
``StartupError`` whose class carries the exit code (see ``levibot.errors``).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec

from levibot.errors import (
    ConfigError,
    DataError,
    InputError,
    LevibotError,
    ListenError,
    StartupError,
    UnavailableError,
    root_cause,
)

#: Client libraries of the servers a node talks to: (module, name, config key, default port).
_SERVERS = (
    ("asyncpg", "PostgreSQL", "postgres_dsn", 5432),
    ("psycopg", "PostgreSQL", "postgres_dsn", 5432),
    ("redis", "Redis", "redis_url", 6379),
    ("nats", "NATS", "url", 4222),
)
_UNREACHABLE = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ETIMEDOUT, errno.EHOSTDOWN, errno.ECONNABORTED,
}  # fmt: skip
_LISTEN = {errno.EADDRINUSE, errno.EADDRNOTAVAIL}
_FILE = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}
_BIND_ADDRESS = re.compile(r"\('([^']*)', (\d+)")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and its causes and contexts (``raise ... from None`` hides, not drops)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def reason(exc: BaseException) -> str:
    """Return why ``exc`` happened in a few lower-case words."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, socket.gaierror) and exc.strerror:
        text = exc.strerror  # "Name or service not known"
    elif isinstance(exc, OSError) and isinstance(code, int) and code > 0:
        text = os.strerror(code)
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def format_traceback(exc: BaseException) -> str:
    """Return ``exc``'s traceback as text, without local variables (they can hold secrets)."""
    return "".join(traceback.format_exception(exc))


def address(url: str, default_port: int) -> str:
    """Return ``host:port`` of a server URL or DSN, never its credentials."""
    url = url.split(",")[0].strip()  # the first of a server list
    if "://" not in url:
        return "the configured address"
    parts = urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return f"{parts.hostname or 'localhost'}:{port}"


async def probe(url: str, default_port: int, timeout: float = 1.0) -> str:
    """Return why a TCP connection to the server of ``url`` fails, after a client gave up."""
    parts = urlsplit(url.split(",")[0].strip())
    try:
        port = parts.port or default_port
    except ValueError:
        return "invalid address"
    target = (parts.hostname or "localhost", port)
    try:  # a thread: socket's errors name the cause, anyio's happy eyeballs wrap it
        sock = await anyio.to_thread.run_sync(lambda: socket.create_connection(target, timeout))
    except OSError as exc:  # TimeoutError included
        return reason(exc)
    sock.close()
    return "the port answers, but not as the server expected"


def explain(
    exc: BaseException, *, component: str, config: Any = None, storage: Any = None
) -> LevibotError:
    """Return the one-line error for ``exc``, raised while ``component`` started.

    ``config`` is the component's own configuration and ``storage`` the ``[storage]`` section:
    they name the key a failing server address or file path came from.
    """
    exc = root_cause(exc)
    if isinstance(exc, StartupError):
        return exc
    where = f"[{component}]"
    if isinstance(exc, ConfigError):
        return ConfigError(f"{exc} ({where})", exc.path)
    causes = list(chain(exc))
    server = _server(causes)
    if server is not None:
        return _unreachable(exc, causes, server, component, config, storage)
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno in _LISTEN:
            where = f"[{component}] port" if hasattr(config, "port") else where
            return ListenError(f"cannot listen on {_bind_address(cause)}: {reason(cause)}", where)
        if isinstance(cause, OSError) and cause.filename and cause.errno in _FILE:
            name = os.fsdecode(cause.filename)
            return InputError(f"cannot open {name}: {reason(cause)}", _key(config, name, component))
    path = getattr(exc, "path", None)  # a LevibotError about a file (KlinesError, ...)
    if isinstance(path, str | Path) and str(path) and not str(path).startswith("$"):
        name = str(path)
        where = _key(config, name, component)
        problem = _unreadable(Path(name))
        if problem:
            return InputError(f"cannot read {name}: {problem}", where)
        return DataError(str(exc), where)
    if isinstance(exc, LevibotError):
        return StartupError(f"{component} failed to start: {exc}", where)
    return StartupError(f"{component} failed to start: {type(exc).__name__}: {exc}", where)


def _server(causes: list[BaseException]) -> tuple[str, str, str, int] | None:
    """Return the server whose client library raised or was on the stack, if any."""
    for cause in causes:
        modules = [type(cause).__module__]
        tb = cause.__traceback__
        while tb is not None:
            modules.append(tb.tb_frame.f_globals.get("__name__", ""))
            tb = tb.tb_next
        for module in modules:
            root = module.partition(".")[0]
            for server in _SERVERS:
                if server[0] == root:
                    return server
    return None


def _unreachable(
    exc: BaseException,
    causes: list[BaseException],
    server: tuple[str, str, str, int],
    component: str,
    config: Any,
    storage: Any,
) -> UnavailableError:
    _, name, key, default_port = server
    url, where = "", f"[{component}]"
    if getattr(config, key, ""):
        url, where = str(getattr(config, key)), f"[{component}] {key}"
    elif getattr(storage, key, ""):
        url, where = str(getattr(storage, key)), f"[storage] {key}"
    at = address(url, default_port) if url else "the configured address"
    connect = next((c for c in causes if _is_connect_failure(c)), None)
    if connect is not None:
        return UnavailableError(f"cannot reach {name} at {at}: {reason(connect)}", where)
    return UnavailableError(f"{name} at {at} failed: {reason(exc)}", where)


def _is_connect_failure(exc: BaseException) -> bool:
    if isinstance(exc, socket.gaierror | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return True
    # The client libraries' own: redis' ConnectionError, asyncpg's CannotConnectNowError.
    return type(exc).__name__ in {"ConnectionError", "TimeoutError", "CannotConnectNowError"}


def _bind_address(exc: OSError) -> str:
    found = _BIND_ADDRESS.search(str(exc))
    return f"{found.group(1)}:{found.group(2)}" if found else "the configured address"


def _unreadable(path: Path) -> str:
    """Return why ``path`` cannot be read as a file, or "" when it can."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return ""


def _key(config: Any, value: str, component: str) -> str:
    """Return ``[section] key`` of the string field of ``config`` holding ``value``."""
    return _find(config, value, component) or f"[{component}]"


def _find(obj: Any, value: str, section: str) -> str:
    if not isinstance(obj, msgspec.Struct):
        return ""
    for field in obj.__struct_fields__:
        item = getattr(obj, field)
        texts = item if isinstance(item, tuple) else (item,)  # ``paths = [...]`` too
        if any(isinstance(t, str) and t and _same_path(t, value) for t in texts):
            return f"[{section}] {field}"
        found = _find(item, value, f"{section}.{field}")
        if found:
            return found
    return ""


def _same_path(a: str, b: str) -> bool:
    return a == b or os.path.abspath(a) == os.path.abspath(b)


__all__ = ["address", "chain", "explain", "format_traceback", "probe", "reason"]

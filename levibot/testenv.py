"""The servers tests and benchmarks talk to: one environment variable each.

``LEVIBOT_TEST_NATS_URL``, ``LEVIBOT_TEST_REDIS_URL`` and ``LEVIBOT_TEST_PG_DSN`` point the
whole suite (and the benchmarks' defaults) at other servers; unset, they are the local ones
this machine runs. A test that must stop or restart a server starts its own on a free port
instead (``levibot.testing.NatsServer``, ``levibot.storage.testing.TempPostgres``).
"""

from __future__ import annotations

import os
import socket

#: NATS with JetStream.
NATS_URL = os.environ.get("LEVIBOT_TEST_NATS_URL", "nats://127.0.0.1:4222")
#: Redis, database 0 (tests use their own key prefixes).
REDIS_URL = os.environ.get("LEVIBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: PostgreSQL (tests create and drop their own databases on it, or use unique names).
PG_DSN = os.environ.get("LEVIBOT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (for a private server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

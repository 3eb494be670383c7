"""Shared auth state across gateway replicas: two real ``levibot run`` gateway processes, each with
its own data dir, both against one migrated PostgreSQL database; keys made by the real
``levibot keys`` command.

A token revoked on one gateway is refused by the other, refresh-token reuse is detected across
them, a restart of both forgets nothing, an expired key is refused, and a rotation accepts both
keys until the old one's retirement and then only the new one.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from levibot.storage.migrate import migrate
from levibot.storage.testing import database
from levibot.testing import NodeProcess, free_port

pytestmark = pytest.mark.integration

SECRET = "replicas-share-this-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with database() as url:

        async def migrated() -> None:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(migrated())
        yield url


class Gateway:
    """One gateway process (``[node] groups = ["gateway"]``) on a free port."""

    def __init__(self, root: Path, name: str, dsn: str) -> None:
        self.root, self.name, self.dsn = root, name, dsn
        self.port = free_port()
        self.data = root / name
        self.data.mkdir(parents=True, exist_ok=True)
        config = root / "gateway.toml"
        config.write_text('[node]\ngroups = ["gateway"]\n')
        self.node = node = NodeProcess(
            config,
            log=root / f"{name}.log",
            env={
                "LEVIBOT__GATEWAY__PORT": str(self.port),
                "LEVIBOT__STORAGE__DATA_DIR": str(self.data),
                "LEVIBOT__STORAGE__POSTGRES_DSN": dsn,
                "LEVIBOT__GATEWAY__JWT_SECRET": SECRET,
            },
        )
        try:
            node.wait_ready(60)
        except BaseException:
            self.close()
            raise

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def refused(self, headers: dict[str, str]) -> str:
        """Return the error code ``GET /risk`` answers with ``headers``; "" when it is allowed."""
        status, body = self.call("GET", "/risk", headers=headers)
        if status == 200:
            return ""
        assert status == 401, (status, body)
        return str(body["error"]["code"])

    def token(self, api_key: str) -> dict[str, Any]:
        status, body = self.call("POST", "/auth/token", {"api_key": api_key})
        assert status == 200, body
        return dict(body)

    def refresh(self, refresh_token: str) -> tuple[int, Any]:
        return self.call("POST", "/auth/refresh", {"refresh_token": refresh_token})

    def stop(self) -> None:
        """Stop it as Kubernetes would (SIGTERM) and check that it drained cleanly."""
        self.node.signal(signal.SIGTERM)
        assert self.node.wait(60) == 0, self.node.tail()

    def close(self) -> None:
        """Kill it if it still runs; its log's tail goes to the output a failure shows."""
        self.node.kill()
        print(f"--- gateway {self.name} (:{self.port}) ---\n{self.node.tail()}")


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def api_key(plain: str) -> dict[str, str]:
    return {"X-API-Key": plain}


def keys(root: Path, dsn: str, *args: str) -> str:
    """Run the real ``levibot keys`` command against ``dsn``; return its output."""
    (root / "empty.toml").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "levibot", "keys", "--config", str(root / "empty.toml"),
         "--dsn", dsn, "--data-dir", str(root / "cli"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def created(out: str) -> tuple[str, str]:
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields["key id"].strip(), fields["api key"].strip()


def created_id(plain: str) -> str:
    return plain.split("_", 2)[1]


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


@contextmanager
def gateways(root: Path, dsn: str, *names: str) -> Iterator[list[Gateway]]:
    """Start one gateway per name; kill whatever still runs at the end."""
    started: list[Gateway] = []
    try:
        for name in names:
            started.append(Gateway(root, name, dsn))
        yield started
    finally:
        for gateway in started:
            gateway.close()


@pytest.fixture(scope="module")
def pair(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    with gateways(tmp_path_factory.mktemp("replicas"), dsn, "a", "b") as both:
        yield both


def test_a_token_revoked_on_one_gateway_is_refused_by_the_other(
    pair: list[Gateway], dsn: str, tmp_path: Path
) -> None:
    a, b = pair
    _, plain = created(keys(tmp_path, dsn, "create", "--name", "alice", "--scopes", "read"))
    assert a.refused(api_key(plain)) == "" and b.refused(api_key(plain)) == ""  # one key table
    signed_out, kept = a.token(plain), a.token(plain)
    assert b.refused(bearer(signed_out)) == ""  # issued on a, accepted on b
    status, body = a.call("POST", "/auth/revoke", {"token": signed_out["refresh_token"]})
    assert (status, body) == (200, {"revoked": True})
    assert b.refused(bearer(signed_out)) == "token_revoked"
    status, body = b.refresh(signed_out["refresh_token"])
    assert (status, body["error"]["code"]) == (401, "token_revoked")
    assert a.refused(bearer(kept)) == "" and b.refused(bearer(kept)) == ""  # its own family
    # Revoked on b by its access token this time: a refuses it.
    assert b.call("POST", "/auth/revoke", {"token": kept["access_token"]})[1] == {"revoked": True}
    assert a.refused(bearer(kept)) == "token_revoked"


def test_refresh_token_reuse_is_detected_across_gateways(
    pair: list[Gateway], dsn: str, tmp_path: Path
) -> None:
    a, b = pair
    _, plain = created(keys(tmp_path, dsn, "create", "--name", "bob", "--scopes", "read"))
    first = a.token(plain)
    status, second = b.refresh(first["refresh_token"])  # rotated on b
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    status, third = a.refresh(second["refresh_token"])  # and again on a
    assert status == 200 and b.refused(bearer(third)) == ""
    status, body = b.refresh(first["refresh_token"])  # the first one replayed: it leaked
    assert (status, body["error"]["code"]) == (401, "refresh_reused")
    for gateway in (a, b):  # the whole family is revoked, on both
        assert gateway.refused(bearer(third)) == "token_revoked"
        status, body = gateway.refresh(third["refresh_token"])
        assert (status, body["error"]["code"]) == (401, "token_revoked")
    assert a.refused(bearer(a.token(plain))) == ""  # a new sign-in is a new family


def test_an_expired_key_is_refused_by_every_gateway(
    pair: list[Gateway], dsn: str, tmp_path: Path
) -> None:
    a, b = pair
    out = keys(tmp_path, dsn, "create", "--name", "temp", "--scopes", "read", "--expires-in", "6s")
    _, plain = created(out)
    expires = time.time() + 6  # a little after the key's own expiry
    token = b.token(plain)
    assert a.refused(api_key(plain)) == "" and a.refused(bearer(token)) == ""
    sleep_until(expires + 0.2)
    for gateway in (a, b):
        assert gateway.refused(api_key(plain)) == "key_expired"
        assert gateway.refused(bearer(token)) == "key_expired"  # its tokens go with it
        status, body = gateway.call("POST", "/auth/token", {"api_key": plain})
        assert (status, body["error"]["code"]) == (401, "key_expired")
    # Expired at once by the command, with no wait: refused on both.
    key_id, other = created(keys(tmp_path, dsn, "create", "--name", "now", "--scopes", "read"))
    assert b.refused(api_key(other)) == ""
    keys(tmp_path, dsn, "expire", key_id)
    assert a.refused(api_key(other)) == "key_expired" == b.refused(api_key(other))


def test_rotation_accepts_both_keys_until_the_old_one_retires_then_only_the_new(
    pair: list[Gateway], dsn: str, tmp_path: Path
) -> None:
    a, b = pair
    old_id, old = created(keys(tmp_path, dsn, "create", "--name", "svc", "--scopes", "trade"))
    old_token = a.token(old)
    out = keys(tmp_path, dsn, "rotate", old_id, "--overlap", "8s")
    retire = time.time() + 8  # a little after the old key's retirement
    new_id, new = created(out)
    assert new_id != old_id and f"old key {old_id} works until" in out
    for gateway in (a, b):  # the overlap: both keys, and tokens of both
        assert gateway.refused(api_key(old)) == "" and gateway.refused(api_key(new)) == ""
        assert gateway.refused(bearer(old_token)) == ""
        assert gateway.refused(bearer(gateway.token(new))) == ""
    listing = keys(tmp_path, dsn, "list")
    row = next(line for line in listing.splitlines() if line.startswith(old_id))
    assert row.split()[-1] == new_id and "svc" in row
    sleep_until(retire + 0.2)
    for gateway in (a, b):  # retired: only the successor
        assert gateway.refused(api_key(old)) == "key_expired"
        assert gateway.refused(bearer(old_token)) == "key_expired"
        assert gateway.refused(api_key(new)) == ""
        assert gateway.refused(bearer(gateway.token(new))) == ""


def test_a_restart_of_both_gateways_forgets_nothing(dsn: str, tmp_path: Path) -> None:
    key_id, plain = created(keys(tmp_path, dsn, "create", "--name", "carol", "--scopes", "read"))
    _, doomed = created(keys(tmp_path, dsn, "create", "--name", "dave", "--scopes", "read"))
    _, soon = created(keys(tmp_path, dsn, "rotate", key_id, "--overlap", "1h"))
    with gateways(tmp_path, dsn, "a", "b") as (a, b):
        revoked, first = a.token(plain), a.token(plain)
        status, second = b.refresh(first["refresh_token"])
        assert status == 200
        assert b.call("POST", "/auth/revoke", {"token": revoked["refresh_token"]})[0] == 200
        keys(tmp_path, dsn, "revoke", created_id(doomed))
        for gateway in (a, b):
            gateway.stop()
    with gateways(tmp_path, dsn, "a2", "b2") as (a, b):  # fresh data dirs too
        assert b.refused(bearer(revoked)) == "token_revoked"  # the revocation
        status, body = a.refresh(revoked["refresh_token"])
        assert (status, body["error"]["code"]) == (401, "token_revoked")
        assert a.refused(api_key(doomed)) == "key_revoked"  # the revoked key
        assert a.refused(api_key(plain)) == "" and b.refused(api_key(soon)) == ""  # the overlap
        assert a.refused(bearer(second)) == ""  # the live family, and which token is spent:
        status, body = a.refresh(first["refresh_token"])
        assert (status, body["error"]["code"]) == (401, "refresh_reused")
        assert b.refused(bearer(second)) == "token_revoked"

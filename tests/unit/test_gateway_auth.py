"""Auth: key hashing and storage, JWT expiry, refresh rotation with reuse detection, the admin
cookie with its IP allowlist, rate limits with Retry-After, the ``levibot keys`` command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from levibot.cli import main as cli
from levibot.errors import ConfigError
from sidecars.gateway.auth import (
    AdminCookie,
    AuthError,
    FileKeyStore,
    MemoryRateLimiter,
    TokenService,
    ip_allowed,
    new_key,
    parse_allowlist,
)
from sidecars.gateway.auth.keys import ApiKeyError, parse_key, verify_secret
from tests.unit.test_gateway_support import SECRET, running_gateway


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- keys -------------------------------------------------------------------------------------


def test_api_key_is_stored_only_as_a_hash_and_verifies() -> None:
    plain, record = new_key("bot", ["read", "trade"])
    key_id, secret = parse_key(plain) or ("", "")
    assert key_id == record.key_id and secret not in record.hash
    assert verify_secret(record.hash, secret)
    assert not verify_secret(record.hash, secret + "x")
    _, peppered = new_key("bot", ["read"], pepper="pep")
    assert peppered.hash.startswith("hmac-sha256$")


@pytest.mark.parametrize(
    "bad", ["", "lb_", "lb_zz_" + "a" * 40, "xx_abc_" + "a" * 40, "lb_ab_short"]
)
def test_malformed_api_keys_are_not_parsed(bad: str) -> None:
    assert parse_key(bad) is None


def test_unknown_scope_is_refused() -> None:
    with pytest.raises(ApiKeyError, match="scopes must be among"):
        new_key("x", ["read", "root"])


@pytest.mark.anyio
async def test_file_store_is_private_and_sees_revocations_by_another_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    server, cli_side = FileKeyStore(path), FileKeyStore(path)
    plain, record = new_key("x", ["admin"])
    await cli_side.add(record)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert plain.split("_", 2)[2] not in path.read_text()
    assert (await server.get(record.key_id)) == record
    assert await cli_side.revoke(record.key_id)
    got = await server.get(record.key_id)
    assert got is not None and got.revoked
    assert not await cli_side.revoke("nope")


def test_keys_command_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.toml").write_text("")
    base = ["keys", "--config", str(tmp_path / "empty.toml"), "--data-dir", str(tmp_path)]
    assert cli([*base, "create", "--name", "alice", "--scopes", "read,trade"]) == 0
    out = capsys.readouterr().out
    plain = next(line.split()[-1] for line in out.splitlines() if line.startswith("api key:"))
    key_id = parse_key(plain)
    assert key_id is not None and plain not in (tmp_path / "keys.json").read_text()
    assert cli([*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id[0] in listing and "read,trade" in listing and plain not in listing
    assert cli([*base, "revoke", key_id[0]]) == 0
    assert cli([*base, "revoke", "ffffffffffff"]) == 2
    assert "no API key" in capsys.readouterr().err
    assert cli([*base, "create", "--name", "x", "--scopes", "god"]) == 2
    audit = [json.loads(x)["action"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit == ["key.create", "key.revoke"]


# --- tokens -----------------------------------------------------------------------------------


def test_access_token_expires_after_its_ttl() -> None:
    clock = Clock()
    tokens = TokenService(SECRET, access_ttl_s=300, now=clock)
    pair = tokens.issue("k1", ["read"])
    assert tokens.verify(pair.access_token).sub == "k1"
    clock.t += 301
    with pytest.raises(AuthError) as info:
        tokens.verify(pair.access_token)
    assert info.value.code == "token_expired"


def test_refresh_rotates_and_reuse_revokes_the_whole_family() -> None:
    tokens = TokenService(SECRET, now=Clock())
    first = tokens.issue("k1", ["read"])
    second = tokens.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    third = tokens.refresh(second.refresh_token)
    assert tokens.verify(third.access_token).sub == "k1"
    with pytest.raises(AuthError) as info:
        tokens.refresh(first.refresh_token)  # replayed: it leaked
    assert info.value.code == "refresh_reused"
    for token in (third.access_token, second.access_token):
        with pytest.raises(AuthError, match="revoked"):
            tokens.verify(token)
    with pytest.raises(AuthError, match="revoked"):
        tokens.refresh(third.refresh_token)
    other = tokens.issue("k1", ["read"])  # another family is untouched
    assert tokens.verify(other.access_token).sub == "k1"


def test_refresh_token_expires() -> None:
    clock = Clock()
    tokens = TokenService(SECRET, refresh_ttl_s=60, now=clock)
    pair = tokens.issue("k1", ["read"])
    clock.t += 61
    with pytest.raises(AuthError) as info:
        tokens.refresh(pair.refresh_token)
    assert info.value.code == "refresh_expired"


def test_mini_app_session_tokens_are_accepted_only_for_telegram_users() -> None:
    import jwt

    tokens = TokenService(SECRET)
    now = int(time.time())
    claims = {"sub": "tg:42", "scopes": ["read"], "iat": now, "exp": now + 60,
              "iss": "levibot-miniapp"}  # fmt: skip
    assert tokens.verify(jwt.encode(claims, SECRET, algorithm="HS256")).sub == "tg:42"
    forged = jwt.encode({**claims, "sub": "somekey"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError):
        tokens.verify(forged)


# --- cookie -----------------------------------------------------------------------------------


def test_admin_cookie_is_signed_expires_and_needs_an_allowlisted_ip() -> None:
    clock = Clock()
    cookie = AdminCookie(SECRET, parse_allowlist(["10.0.0.0/8", "::1/128"]), ttl_s=60, now=clock)
    value = cookie.make("k1")
    assert cookie.verify(value, "10.1.2.3") == "k1"
    assert cookie.verify(value, "::1") == "k1"
    with pytest.raises(AuthError, match="not accepted from this address"):
        cookie.verify(value, "192.168.1.1")
    tampered = value.replace(".k1.", ".k2.")
    with pytest.raises(AuthError, match="signature"):
        cookie.verify(tampered, "10.1.2.3")
    clock.t += 61
    with pytest.raises(AuthError, match="expired"):
        cookie.verify(value, "10.1.2.3")


def test_allowlist_handles_mapped_ipv4_and_bad_entries() -> None:
    nets = parse_allowlist(["127.0.0.1/32"])
    assert ip_allowed("::ffff:127.0.0.1", nets) and not ip_allowed("garbage", nets)
    with pytest.raises(ConfigError, match="admin_ip_allowlist"):
        parse_allowlist(["300.1.1.1/8"])


# --- rate limits ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_limiter_refuses_over_the_limit_until_the_window_ends() -> None:
    clock = Clock(100.0)
    limiter = MemoryRateLimiter(10.0, now=clock)
    assert [await limiter.hit(("k", 2)) for _ in range(2)] == [None, None]
    assert await limiter.hit(("k", 2)) == 10.0
    assert await limiter.hit(("other", 2)) is None
    assert await limiter.hit(("other", 2), ("k", 5)) is None  # both counted: k is at 4
    assert await limiter.hit(("k", 4)) == 10.0
    clock.t = 110.0
    assert await limiter.hit(("k", 2)) is None


# --- over HTTP --------------------------------------------------------------------------------


async def post(g: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    async with g.session.post(g.url + path, json=body, headers=headers or {}) as r:
        return r.status, await r.json(), r


@pytest.mark.anyio
async def test_refresh_over_http_rotates_and_detects_reuse(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        first = await g.token("read")
        status, second, _ = await post(
            g, "/auth/refresh", {"refresh_token": first["refresh_token"]}
        )
        assert status == 200
        status, err, _ = await post(g, "/auth/refresh", {"refresh_token": first["refresh_token"]})
        assert (status, err["error"]["code"]) == (401, "refresh_reused")
        bearer = {"Authorization": f"Bearer {second['access_token']}"}
        async with g.session.get(g.url + "/risk", headers=bearer) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "token_revoked"
        status, err, _ = await post(g, "/auth/token", {"api_key": "lb_000000000000_" + "x" * 43})
        assert (status, err["error"]["code"]) == (401, "key_invalid")


@pytest.mark.anyio
async def test_admin_cookie_over_http_and_ip_allowlist(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        status, _body, response = await post(g, "/auth/cookie", {}, g.h("admin"))
        assert status == 200
        value = response.cookies["lb_admin"].value
        cookie = {"Cookie": f"lb_admin={value}"}
        g.session.cookie_jar.clear()
        status, _, _ = await post(g, "/killswitch", {"on": False}, cookie)
        assert status == 202
        status, err, _ = await post(g, "/killswitch", {"on": False},
                                    {"Cookie": f"lb_admin={value[:-2]}xx"})  # fmt: skip
        assert (status, err["error"]["code"]) == (401, "cookie_invalid")
    async with running_gateway(tmp_path / "b", admin_ip_allowlist=("10.0.0.0/8",)) as g:
        status, err, _ = await post(g, "/auth/cookie", {}, g.h("admin"))
        assert (status, err["error"]["code"]) == (403, "ip_not_allowed")
        forged = g.services.cookie.make(g.key_ids["admin"])
        status, err, _ = await post(
            g, "/killswitch", {"on": True}, {"Cookie": f"lb_admin={forged}"}
        )
        assert (status, err["error"]["code"]) == (403, "ip_not_allowed")


@pytest.mark.anyio
async def test_rate_limits_per_key_and_per_ip_answer_429_with_retry_after(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, rate_limit_per_key=3, rate_limit_per_ip=5) as g:
        statuses = []
        for _ in range(4):
            async with g.session.get(g.url + "/risk", headers=g.h("read")) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After")
        assert statuses == [200, 200, 200, 429]
        assert retry is not None and 1 <= int(retry) <= 60
        # Another key has its own budget, until the IP's budget (5) runs out.
        async with g.session.get(g.url + "/risk", headers=g.h("trade")) as r:
            assert r.status == 200  # the 5th request from this IP
        async with g.session.get(g.url + "/risk", headers=g.h("trade")) as r:
            assert r.status == 429  # the 6th
            assert (await r.json())["error"]["code"] == "rate_limited"
        async with g.session.get(g.url + "/health") as r:
            assert r.status == 200  # probes are never limited
        assert g.services.metrics.value("gateway_rate_limited_total") == 2


@pytest.mark.anyio
async def test_mini_app_is_mounted_and_its_session_tokens_open_rest_and_websocket(
    tmp_path: Path,
) -> None:
    from sidecars.miniapp.session import issue_session_token

    async with running_gateway(tmp_path) as g:
        async with g.session.get(g.url + "/app") as r:
            assert r.status == 200 and "html" in r.content_type
        token = issue_session_token(42, admin=False, secret=SECRET.encode())
        bearer = {"Authorization": f"Bearer {token}"}
        async with g.session.get(g.url + "/risk", headers=bearer) as r:
            assert r.status == 200
        async with g.session.post(g.url + "/killswitch", json={"on": True}, headers=bearer) as r:
            assert r.status == 403  # a non-admin Telegram user
        ws = await g.session.ws_connect(f"{g.url}/ws?token={token}")
        await ws.send_json({"op": "ping", "id": 1})
        assert (await ws.receive_json(timeout=10))["type"] == "pong"
        await ws.close()
        stale = issue_session_token(42, admin=True, secret=SECRET.encode(), now=time.time() - 900)
        async with g.session.get(
            g.url + "/risk", headers={"Authorization": f"Bearer {stale}"}
        ) as r:
            assert r.status == 401

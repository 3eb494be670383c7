"""API key expiry and rotation with overlap in the embedded mode (keys.json): the store, the
guard over HTTP, the ``levibot keys`` command; and the token ledger's revocation route."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from levibot.cli import main as cli
from sidecars.gateway.auth import ApiKeyError, FileKeyStore, new_key, rotate_key
from tests.unit.test_gateway_support import Harness, running_gateway

pytestmark = pytest.mark.anyio


async def status_of(g: Harness, key: str) -> tuple[int, str]:
    async with g.session.get(g.url + "/risk", headers={"X-API-Key": key}) as r:
        body = await r.json()
        return r.status, "" if r.status == 200 else body["error"]["code"]


async def test_expiry_and_successor_survive_the_file_store(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys.json")
    _, record = new_key("x", ["read"], expires_at=time.time() + 60)
    await store.add(record)
    again = await FileKeyStore(tmp_path / "keys.json").get(record.key_id)
    assert again == record and again.expires_at is not None
    assert not again.expired(time.time()) and again.expired(again.expires_at)
    retired = await store.retire(record.key_id, 5.0)
    assert retired is not None and (retired.expires_at, retired.replaced_by) == (5.0, "")
    assert await store.get(record.key_id) == retired
    assert await store.retire("ffffffffffff", 5.0) is None
    _, successor = new_key("x", ["read"])
    rotated = await store.rotate(record.key_id, successor, 7.0)
    assert rotated is not None and (rotated.expires_at, rotated.replaced_by) == (
        7.0,
        successor.key_id,
    )
    assert await FileKeyStore(tmp_path / "keys.json").get(successor.key_id) == successor
    _, another = new_key("x", ["read"])
    assert await store.rotate(record.key_id, another, 9.0) is None  # rotated once already
    assert await store.rotate("ffffffffffff", another, 9.0) is None
    assert await store.get(another.key_id) is None  # and nothing was stored for them


async def test_a_key_file_from_before_expiries_still_reads(tmp_path: Path) -> None:
    _, record = new_key("old", ["admin"])
    old = {
        k: v
        for k, v in msgspec.to_builtins(record).items()
        if k not in {"expires_at", "replaced_by"}
    }
    (tmp_path / "keys.json").write_text(json.dumps([old]))
    got = await FileKeyStore(tmp_path / "keys.json").get(record.key_id)
    assert got == record and got.expires_at is None and got.replaced_by == ""


def test_a_new_key_cannot_start_expired() -> None:
    with pytest.raises(ApiKeyError, match="future"):
        new_key("x", ["read"], expires_at=time.time() - 1)


async def test_rotation_keeps_name_and_scopes_and_never_extends_the_old_key(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys.json")
    _, old = new_key("billing", ["trade"], expires_at=time.time() + 30)
    await store.add(old)
    plain, successor, retired = await rotate_key(store, old.key_id, time.time() + 3600)
    assert (successor.name, successor.scopes) == ("billing", ("trade",))
    assert successor.key_id != old.key_id and plain.startswith(f"lb_{successor.key_id}_")
    assert retired.replaced_by == successor.key_id
    assert retired.expires_at == old.expires_at  # asked for an hour; it had 30 s left
    with pytest.raises(ApiKeyError, match="already rotated"):
        await rotate_key(store, old.key_id, time.time() + 60)
    with pytest.raises(ApiKeyError, match="past"):
        await rotate_key(store, successor.key_id, time.time() - 60)
    await store.revoke(successor.key_id)
    with pytest.raises(ApiKeyError, match="revoked"):
        await rotate_key(store, successor.key_id, time.time() + 60)
    with pytest.raises(ApiKeyError, match="no API key"):
        await rotate_key(store, "ffffffffffff", time.time() + 60)
    _, gone = new_key("gone", ["read"], expires_at=time.time() + 60)
    await store.add(gone)
    await store.retire(gone.key_id, time.time() - 1)
    with pytest.raises(ApiKeyError, match="expired"):
        await rotate_key(store, gone.key_id, time.time() + 60)


async def test_gateway_refuses_an_expired_key_and_its_tokens(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        store = FileKeyStore(tmp_path / "keys.json")
        plain, record = new_key("soon", ["read"], expires_at=time.time() + 60)
        await store.add(record)
        assert await status_of(g, plain) == (200, "")
        async with g.session.post(g.url + "/auth/token", json={"api_key": plain}) as r:
            bearer = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
        await store.retire(record.key_id, time.time() - 0.001)  # as `levibot keys expire`
        assert await status_of(g, plain) == (401, "key_expired")
        async with g.session.get(g.url + "/risk", headers=bearer) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "key_expired"
        async with g.session.post(g.url + "/auth/token", json={"api_key": plain}) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "key_expired"


async def test_rotation_overlap_then_only_the_successor(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        store = FileKeyStore(tmp_path / "keys.json")
        old = g.keys["read"]
        new, _, retired = await rotate_key(store, g.key_ids["read"], time.time() + 60)
        assert await status_of(g, old) == (200, "") and await status_of(g, new) == (200, "")
        assert retired.expires_at is not None
        await store.retire(retired.key_id, time.time() - 0.001)  # the overlap is over
        assert await status_of(g, old) == (401, "key_expired")
        assert await status_of(g, new) == (200, "")


async def test_revoke_route_signs_a_family_out_by_either_token(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        for which in ("refresh_token", "access_token"):
            pair = await g.token("read")
            bearer = {"Authorization": f"Bearer {pair['access_token']}"}
            async with g.session.post(g.url + "/auth/revoke", json={"token": pair[which]}) as r:
                assert (r.status, await r.json()) == (200, {"revoked": True})
            async with g.session.get(g.url + "/risk", headers=bearer) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "token_revoked"
            body = {"refresh_token": pair["refresh_token"]}
            async with g.session.post(g.url + "/auth/refresh", json=body) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "token_revoked"
        other = await g.token("read")  # another family is untouched
        async with g.session.get(
            g.url + "/risk", headers={"Authorization": f"Bearer {other['access_token']}"}
        ) as r:
            assert r.status == 200
        for nothing in ("rt_unknown", "not.a.jwt"):
            async with g.session.post(g.url + "/auth/revoke", json={"token": nothing}) as r:
                assert (r.status, await r.json()) == (200, {"revoked": False})
        async with g.session.post(g.url + "/auth/revoke", json={}) as r:
            assert r.status == 422
        actions = [e.action for e in g.services.audit.read()]
        assert actions.count("token.revoke") == 2


async def test_revoking_one_mini_app_session_cannot_sign_out_all_of_them(tmp_path: Path) -> None:
    import jwt

    from tests.unit.test_gateway_support import SECRET

    now = int(time.time())
    claims = {"sub": "tg:42", "scopes": ["read"], "iat": now, "exp": now + 60,
              "iss": "levibot-miniapp"}  # fmt: skip
    session = jwt.encode(claims, SECRET, algorithm="HS256")
    async with running_gateway(tmp_path) as g:
        async with g.session.post(g.url + "/auth/revoke", json={"token": session}) as r:
            assert (r.status, await r.json()) == (200, {"revoked": False})
        other = jwt.encode({**claims, "sub": "tg:43"}, SECRET, algorithm="HS256")
        for token in (session, other):  # every Mini App session shares one family name
            headers = {"Authorization": f"Bearer {token}"}
            async with g.session.get(g.url + "/risk", headers=headers) as r:
                assert r.status == 200


def keys(tmp_path: Path, *args: str) -> list[str]:
    return ["keys", "--config", str(tmp_path / "empty.toml"), "--data-dir", str(tmp_path), *args]


def created(out: str) -> tuple[str, str]:
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return lines["key id"].strip(), lines["api key"].strip()


def test_keys_command_expires_rotates_and_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.toml").write_text("")
    assert (
        cli(keys(tmp_path, "create", "--name", "ci", "--scopes", "read", "--expires-in", "7d")) == 0
    )
    key_id, _ = created(capsys.readouterr().out)
    stored: dict[str, Any] = {
        k["key_id"]: k for k in json.loads((tmp_path / "keys.json").read_text())
    }
    assert 7 * 86400 - 60 < stored[key_id]["expires_at"] - time.time() <= 7 * 86400

    assert cli(keys(tmp_path, "rotate", key_id, "--overlap", "2h")) == 0
    out = capsys.readouterr().out
    successor, plain = created(out)
    assert successor != key_id and f"old key {key_id} works until" in out
    stored = {k["key_id"]: k for k in json.loads((tmp_path / "keys.json").read_text())}
    assert 2 * 3600 - 60 < stored[key_id]["expires_at"] - time.time() <= 2 * 3600
    assert stored[key_id]["replaced_by"] == successor and stored[successor]["expires_at"] is None
    assert plain not in (tmp_path / "keys.json").read_text()

    assert cli(keys(tmp_path, "expire", successor, "--at", "2030-01-02T03:04:05Z")) == 0
    assert "2030-01-02 03:04:05Z" in capsys.readouterr().out
    # Only forward: a later expiry would stretch the old key's overlap, or revive it.
    assert cli(keys(tmp_path, "expire", key_id, "--in", "30d")) != 0
    assert "only brings an expiry forward" in capsys.readouterr().err
    stored = {k["key_id"]: k for k in json.loads((tmp_path / "keys.json").read_text())}
    assert stored[key_id]["expires_at"] - time.time() <= 2 * 3600
    assert cli(keys(tmp_path, "list")) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith(key_id))
    assert row.split()[-1] == successor and "EXPIRES" in listing and "REPLACED BY" in listing

    assert cli(keys(tmp_path, "rotate", successor, "--retire-at", "yesterday")) == 2
    assert "--retire-at 'yesterday': expected ISO-8601" in capsys.readouterr().err
    assert cli(keys(tmp_path, "create", "--name", "x", "--expires-in", "soon")) == 2
    assert "--expires-in 'soon': expected a duration" in capsys.readouterr().err
    assert cli(keys(tmp_path, "expire", "ffffffffffff")) == 2
    assert "no API key" in capsys.readouterr().err
    audit = [json.loads(x)["action"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit == ["key.create", "key.rotate", "key.expire"]

"""Every protected route refuses a missing, wrong, expired or revoked credential (401), a
credential without the route's scope (403), and accepts a good one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecars.gateway.auth import FileKeyStore, TokenService, new_key
from sidecars.gateway.rest import ROUTES
from tests.unit.test_gateway_support import SECRET, Harness, running_gateway

PROTECTED = [(r.method, r.path, r.scope) for r in ROUTES if r.scope is not None] + [
    ("GET", "/ws", "read")
]
PUBLIC = [(r.method, r.path) for r in ROUTES if r.scope is None]
_FILL = {"job_id": "nope", "client_order_id": "nope", "name": "ema", "symbol": "BTCUSDT"}


def _url(path: str) -> str:
    for k, v in _FILL.items():
        path = path.replace("{" + k + "}", v)
    return path


@pytest.fixture(scope="module")
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("guard")
    # The victim key gets a token and is then revoked: both must stop working.
    victim_plain, victim = new_key("victim", ["admin"])
    await FileKeyStore(tmp / "keys.json").add(victim)
    async with running_gateway(tmp, rate_limit_per_ip=100_000, rate_limit_per_key=100_000) as g:
        g.services.trainer = lambda options: {"model_id": "fake"}  # POST /retrain never trains
        pair = g.services.tokens.issue(victim.key_id, victim.scopes)
        await g.services.auth.keys.revoke(victim.key_id)
        past = TokenService(SECRET, now=lambda: time.time() - 3600)
        expired = past.issue(g.key_ids["admin"], ["admin"]).access_token
        key_id = g.key_ids["admin"]
        forged = TokenService("other-secret-" + "x" * 20).issue(key_id, ["admin"]).access_token
        yield {
            "g": g,
            "creds": {
                "missing": {},
                "wrong_token": {"Authorization": "Bearer not.a.jwt"},
                "forged_token": {"Authorization": f"Bearer {forged}"},
                "wrong_key": {"X-API-Key": f"lb_{key_id}_{'A' * 43}"},
                "expired_token": {"Authorization": f"Bearer {expired}"},
                "revoked_key": {"X-API-Key": victim_plain},
                "revoked_token": {"Authorization": f"Bearer {pair.access_token}"},
            },
        }  # fmt: skip


async def _call(g: Harness, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with g.session.request(method, g.url + _url(path), json={}, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "mode",
    ["missing", "wrong_token", "forged_token", "wrong_key", "expired_token", "revoked_key",
     "revoked_token"],
)  # fmt: skip
@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
async def test_protected_route_refuses_bad_credential(
    gw: dict[str, Any], method: str, path: str, scope: str, mode: str
) -> None:
    status, body = await _call(gw["g"], method, path, gw["creds"][mode])
    assert status == 401, (method, path, mode, body)
    expected = {
        "missing": "auth_required", "wrong_token": "token_invalid", "forged_token": "token_invalid",
        "wrong_key": "key_invalid", "expired_token": "token_expired", "revoked_key": "key_revoked",
        "revoked_token": "key_revoked",
    }  # fmt: skip
    assert body["error"]["code"] == expected[mode]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
async def test_protected_route_needs_its_scope(
    gw: dict[str, Any], method: str, path: str, scope: str
) -> None:
    g: Harness = gw["g"]
    weaker = {"read": None, "trade": "read", "admin": "trade"}[scope]
    if weaker is not None:
        status, body = await _call(g, method, path, g.h(weaker))
        assert status == 403, (method, path, body)
        assert body["error"]["code"] == "insufficient_scope"
    # With the right scope the guard lets it through (the handler may still say 4xx).
    status, body = await _call(g, method, path, g.h(scope))
    assert status not in (401, 403, 429) and status < 500, (method, path, status, body)


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path"), PUBLIC)
async def test_public_route_needs_no_credential(gw: dict[str, Any], method: str, path: str) -> None:
    g: Harness = gw["g"]
    async with g.session.request(method, g.url + path, json={}) as r:
        assert r.status not in (401, 403) and r.status < 500


@pytest.mark.anyio
async def test_bearer_token_from_api_key_works_and_scopes_follow_the_key(
    gw: dict[str, Any],
) -> None:
    g: Harness = gw["g"]
    token = await g.token("trade")
    assert set(token["scopes"]) == {"trade"} and token["expires_in"] == 300
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    status, _ = await _call(g, "GET", "/risk", headers)  # trade implies read
    assert status == 200
    status, body = await _call(g, "POST", "/killswitch", headers)
    assert status == 403 and body["error"]["code"] == "insufficient_scope"

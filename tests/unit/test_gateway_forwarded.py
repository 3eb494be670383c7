"""The client's address behind trusted proxies, and headers from anyone else ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from levibot.config import convert
from levibot.errors import ConfigError
from sidecars.gateway.actor import GatewayConfig
from sidecars.gateway.forwarded import client_address, parse_networks
from tests.unit.test_gateway_auth import post
from tests.unit.test_gateway_support import running_gateway

INGRESS = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "xff", "want"),
    [
        ("198.51.100.1", None, "203.0.113.7", "198.51.100.1"),  # not a proxy: ignored
        ("10.0.0.5", None, None, "10.0.0.5"),  # a proxy, but no header
        ("10.0.0.5", None, "203.0.113.7", "203.0.113.7"),
        ("10.0.0.5", None, "203.0.113.7, 10.1.1.1", "203.0.113.7"),  # two proxies
        # A client claiming to be someone (or something trusted) by sending the header itself:
        ("10.0.0.5", None, "127.0.0.1, 198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", None, "10.9.9.9, 198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", None, "garbage, 198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", None, "198.51.100.9, unknown", "10.0.0.5"),  # a hop we cannot read
        ("10.0.0.5", None, "203.0.113.7:4711", "203.0.113.7"),
        ("10.0.0.5", 'for=192.0.2.60;proto=https, for="[2001:db8::1]:47011"', None, "2001:db8::1"),
        ("10.0.0.5", "for=192.0.2.60;proto=http;by=203.0.113.43", "1.1.1.1", "192.0.2.60"),
        ("fd00::1", None, "2001:db8::7", "2001:db8::7"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, xff: str | None, want: str) -> None:
    assert client_address(peer, forwarded, xff, INGRESS) == want


def test_without_trusted_proxies_the_headers_are_ignored() -> None:
    assert client_address("10.0.0.5", "for=1.2.3.4", "1.2.3.4", ()) == "10.0.0.5"


def test_a_bad_cidr_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="not-a-net"):
        convert({"trusted_proxies": ["10.0.0.0/8", "not-a-net"]}, GatewayConfig)


@pytest.mark.anyio
async def test_rate_limits_and_the_admin_allow_list_see_the_forwarded_client(
    tmp_path: Path,
) -> None:
    cfg: dict[str, Any] = {"trusted_proxies": ("127.0.0.1/32",), "rate_limit_per_ip": 3,
                           "rate_limit_per_key": 1000}  # fmt: skip
    async with running_gateway(tmp_path, **cfg) as g:

        async def get(client: str) -> int:
            headers = {**g.h("read"), "X-Forwarded-For": client}
            async with g.session.get(g.url + "/risk", headers=headers) as r:
                return r.status

        assert [await get("203.0.113.7") for _ in range(4)] == [200, 200, 200, 429]
        assert await get("203.0.113.8") == 200  # another client, its own budget
        # A client behind the proxy is not on the admin allow-list (127.0.0.1/32)...
        headers = {**g.h("admin"), "X-Forwarded-For": "203.0.113.9"}
        status, err, _ = await post(g, "/auth/cookie", {}, headers)
        assert (status, err["error"]["code"]) == (403, "ip_not_allowed")
    async with running_gateway(tmp_path / "b", rate_limit_per_ip=3) as g:
        # ...and with no trusted proxy, the header changes nothing: same peer, same budget.
        statuses = []
        for client in ("203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"):
            headers = {**g.h("read"), "X-Forwarded-For": client}
            async with g.session.get(g.url + "/risk", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 200, 429]

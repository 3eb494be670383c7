"""``GET /ws`` accepts exactly the upgrade requests its OpenAPI operation describes.

Schemathesis cannot follow a 101 (``test_gateway_schemathesis.py`` leaves ``/ws`` out), so this
test does its two checks for it: header sets generated from the documented patterns upgrade
(101), and sets with one header missing or not matching its pattern are refused with the
documented 400, over raw HTTP so that no client library adds or fixes a header.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_gateway_support import Harness, running_gateway

pytestmark = pytest.mark.anyio

Headers = dict[str, str]
# What a header value may hold (visible ASCII, inner spaces and tabs); the parser strips the
# whitespace around a value, so generated values neither start nor end with it.
_VALUE = string.ascii_letters + string.digits + string.punctuation + " \t"


def _trimmed(value: str) -> bool:
    return value == value.strip(" \t")


def collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """Return ``n`` examples of ``strategy`` (deterministic: the same every run)."""
    out: list[Any] = []

    @settings(max_examples=n, database=None, derandomize=True)
    @given(strategy)
    def gather(example: Any) -> None:
        out.append(example)

    gather()
    return out


def upgrade_cases(params: list[dict[str, Any]]) -> tuple[list[Headers], list[Headers]]:
    """Return (valid, invalid) header sets for the documented header parameters."""
    patterns = {p["name"]: p["schema"]["pattern"] for p in params if p["in"] == "header"}

    def value(pattern: str) -> st.SearchStrategy[str]:
        return st.from_regex(pattern, fullmatch=True, alphabet=_VALUE).filter(_trimmed)

    valid = st.fixed_dictionaries({name: value(p) for name, p in patterns.items()})

    @st.composite
    def invalid(draw: st.DrawFn) -> Headers:
        headers = dict(draw(valid))
        name = draw(st.sampled_from(sorted(patterns)))
        wrong = st.text(_VALUE, max_size=40).filter(
            lambda v: _trimmed(v) and not re.fullmatch(patterns[name], v)
        )
        if draw(st.booleans()):
            del headers[name]
        else:
            headers[name] = draw(wrong)
        return headers

    return collect(valid, 20), collect(invalid(), 40)


async def upgrade_status(g: Harness, headers: Headers, *, key: bool = True) -> int:
    """Send ``GET /ws`` with exactly ``headers`` (and the read key); return the status."""
    lines = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{g.actor.port}"]
    if key:
        lines.append(f"X-API-Key: {g.keys['read']}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    async with await anyio.connect_tcp("127.0.0.1", g.actor.port) as stream:
        await stream.send(request)
        head = b""
        while b"\r\n" not in head:
            head += await stream.receive()
    return int(head.split(b" ", 2)[1])


async def test_ws_upgrades_exactly_the_documented_requests(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        async with g.session.get(g.url + "/openapi.json") as r:
            doc = json.loads(await r.text())
        op = doc["paths"]["/ws"]["get"]
        assert {"101", "400", "401"} <= set(op["responses"])
        valid, invalid = upgrade_cases(op["parameters"])
        for headers in valid:
            assert await upgrade_status(g, headers) == 101, headers
            assert await upgrade_status(g, headers, key=False) == 401, headers
        for headers in invalid:
            assert await upgrade_status(g, headers) == 400, headers
        assert await upgrade_status(g, {}) == 400  # a plain GET: the documented 400

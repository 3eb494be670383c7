"""Property-based run of schemathesis against ``/openapi.json``: no input gets a 5xx."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.unit.test_gateway_support import running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


async def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    async with running_gateway(
        tmp_path, rate_limit_per_ip=1_000_000, rate_limit_per_key=1_000_000,
        telegram_bot_token="123:test-token",
    ) as g:  # fmt: skip
        g.services.trainer = lambda options: {"model_id": "fake"}  # never train for real here
        token = (await g.token("admin"))["access_token"]
        command = [
            str(st), "run", f"{g.url}/openapi.json",
            "--checks", "not_a_server_error",
            "--max-examples", "10", "--max-time", "30", "--seed", "7", "--workers", "1",
            "--header", f"Authorization: Bearer {token}",
            "--report", "junit", "--report-dir", str(tmp_path / "st"),
            "--warnings", "off",
        ]  # fmt: skip
        result: Any = None

        async def run() -> None:
            nonlocal result
            result = await anyio.run_process(command, check=False)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
        out = result.stdout.decode() + result.stderr.decode()
        assert result.returncode == 0, out[-6000:]
        assert "No issues found" in out, out[-6000:]

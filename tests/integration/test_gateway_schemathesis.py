"""Schemathesis with every check against ``/openapi.json``: the document and the server agree.

Every check of the installed schemathesis runs (``--checks all``: no 5xx, documented status
codes, content types and response schemas, schema-valid requests accepted, schema-invalid ones
refused, auth not ignored, ...), once with an admin token and once with no credentials, over
every operation but ``GET /ws``: a 101 hands the connection to the websocket protocol, which an
HTTP fuzzer cannot follow. ``test_gateway_ws_upgrade.py`` holds ``/ws`` to its documented
headers instead. The budget is fixed (examples per operation, seed), so the run stays short.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio
import pytest

from tests.unit.test_gateway_support import running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 10
SEED = 7


def st_command(url: str, report_dir: Path, *headers: str) -> list[str]:
    """Return the ``st run`` command line with every check and a fixed budget."""
    command = [
        str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json",
        "--checks", "all", "--exclude-path", "/ws",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
        "--report", "junit", "--report-dir", str(report_dir),
        "--warnings", "off",
    ]  # fmt: skip
    # One worker: with several, hypothesis parses lambdas with ``ast`` from several threads,
    # which CPython 3.11 can fail with "AST constructor recursion depth mismatch" (seen here;
    # python/cpython#106905). The two runs go in parallel as processes instead.
    for header in headers:
        command += ["--header", header]
    return command


def summary(out: str) -> str:
    """Return schemathesis's figures: operations tested, test cases, run time."""
    tested = re.search(r"Tested: (\d+)", out)
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    took = re.search(r"in ([0-9.]+)s =+", out)
    return (
        f"operations={tested and tested.group(1)} "
        f"cases={cases and cases.group(1)} passed={cases and cases.group(2)} "
        f"seconds={took and took.group(1)}"
    )


async def test_schemathesis_all_checks_pass_with_and_without_credentials(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path, rate_limit_per_ip=1_000_000, rate_limit_per_key=1_000_000,
        telegram_bot_token="123:test-token",
    ) as g:  # fmt: skip
        g.services.trainer = lambda options: {"model_id": "fake"}  # never train for real here
        token = (await g.token("admin"))["access_token"]
        runs = {
            "admin": st_command(g.url, tmp_path / "admin", f"Authorization: Bearer {token}"),
            "anonymous": st_command(g.url, tmp_path / "anonymous"),
        }
        outputs: dict[str, tuple[int, str]] = {}

        async def run(name: str, command: list[str]) -> None:
            result = await anyio.run_process(command, check=False)
            outputs[name] = (result.returncode, result.stdout.decode() + result.stderr.decode())

        async with anyio.create_task_group() as tg:  # the two runs share the wait
            for name, command in runs.items():
                tg.start_soon(run, name, command)
    for name, (code, out) in outputs.items():
        print(f"\nschemathesis {name}: {summary(out)}")
        assert code == 0, out[-8000:]
        assert "No issues found" in out, out[-8000:]
        assert re.search(r"Tested: (\d+)", out) is not None, out[-2000:]

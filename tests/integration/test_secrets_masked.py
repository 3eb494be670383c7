"""No credential is printed: not by ``config check``, not in the logs of a failing start.

Every secret below is configured through the environment, as the pods do; the test greps
every line each command wrote for each of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from levibot.secrets import mask, mask_text
from levibot.testing import free_port

pytestmark = pytest.mark.integration

SECRETS = ("N4TS-PASSWORD", "R3DIS-PASSWORD", "PG-PASSW0RD", "123456:TELEGRAM-TOKEN", "JWT-S3CRET")


def env(tmp: Path, nats_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "LEVIBOT__NATS__URL": f"nats://levibot:N4TS-PASSWORD@127.0.0.1:{nats_port}",
        "LEVIBOT__NATS__CONNECT_TIMEOUT_S": "1",
        "LEVIBOT__STORAGE__REDIS_URL": "redis://:R3DIS-PASSWORD@127.0.0.1:6379/0",
        "LEVIBOT__STORAGE__POSTGRES_DSN": "postgresql://levibot:PG-PASSW0RD@127.0.0.1:1/x",
        "LEVIBOT__STORAGE__DATA_DIR": str(tmp),
        "LEVIBOT__TELEGRAM__TOKEN": "123456:TELEGRAM-TOKEN",
        "LEVIBOT__GATEWAY__JWT_SECRET": "JWT-S3CRET",
        "LEVIBOT__LOG__LEVEL": "debug",
    }


def levibot(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "levibot", *args], env=env(tmp, free_port()), cwd=tmp,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_config_check_masks_every_credential_but_keeps_the_addresses(tmp_path: Path) -> None:
    out = levibot(tmp_path, "config", "check")
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for secret in SECRETS:
        assert secret not in text, secret
    assert "nats://levibot:***@127.0.0.1:" in text
    assert "redis://:***@127.0.0.1:6379/0" in text
    assert "postgresql://levibot:***@127.0.0.1:1/x" in text


def test_a_failing_start_logs_no_credential_even_at_debug(tmp_path: Path) -> None:
    out = levibot(tmp_path, "run", "--groups", "execution")
    assert out.returncode == 69  # NATS unreachable
    lines = (out.stdout + out.stderr).splitlines()
    assert lines and "cannot reach NATS" in lines[-1]
    for line in lines:
        for secret in SECRETS:
            assert secret not in line, line


def test_masking_rules() -> None:
    assert mask_text("nats://a:b@h1,nats://c:d@h2") == "nats://a:***@h1,nats://c:***@h2"
    assert mask_text("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert mask_text("host=h password='x y' dbname=d") == "host=h password=*** dbname=d"
    assert (
        mask_text("postgresql://postgres@127.0.0.1/test") == "postgresql://postgres@127.0.0.1/test"
    )
    assert mask({"api_key": "k", "ids": [1], "url": "redis://:p@h"}) == {
        "api_key": "***", "ids": [1], "url": "redis://:***@h"}  # fmt: skip

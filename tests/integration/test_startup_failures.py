"""``levibot run`` that cannot start ends with one clear line and a documented exit code.

Each case runs the real command as a child process against a real fault: a port another socket
holds, a closed port where a server should be, a model that is not in the registry, a data
file that is missing, a directory or malformed. stderr's last line says what failed, why and
where it was configured; there is no traceback (that is logged at debug level only).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from levibot.errors import EXIT_CODES
from levibot.testing import free_port, write_config

pytestmark = pytest.mark.slow


def run(
    tmp_path: Path, sections: dict[str, dict[str, object]], env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``levibot run`` on a config of ``sections``; return its exit code and stderr."""
    node = {"http_port": 0, "drain_timeout_s": 5.0, **sections.pop("node", {})}
    config = write_config(tmp_path / "c.toml", {"node": node, **sections})
    result = subprocess.run(
        [sys.executable, "-m", "levibot", "run", "--config", str(config)],
        env={**os.environ, "LEVIBOT__LOG__FORMAT": "json", **(env or {})},
        capture_output=True,
        timeout=60,
    )
    return result.returncode, result.stderr.decode(errors="replace")


def last_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.rstrip("\n").splitlines()[-1]


def pipeline(**node: object) -> dict[str, dict[str, object]]:
    """The tests' own three-actor pipeline: starts in well under a second."""
    return {
        "node": {"plugins": ["tests.pipeline"], "groups": ["all"], **node},
        "groups": {"all": ["counter", "square", "sink"]},
        "counter": {"count": 10},
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_names_the_address_and_the_setting(tmp_path: Path, taken_port: int) -> None:
    code, err = run(tmp_path, pipeline(http_port=taken_port))
    assert code == 73, err[-3000:]
    assert last_line(err) == (
        f"levibot: error: cannot listen on 127.0.0.1:{taken_port}: address already in use "
        "([node] http_port)"
    )


def test_an_unreachable_nats_server_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    sections = pipeline()
    sections["nats"] = {"url": f"nats://127.0.0.1:{port}", "connect_timeout_s": 1.0}
    code, err = run(tmp_path, sections)
    assert code == 69, err[-3000:]
    assert last_line(err) == (
        f"levibot: error: cannot reach NATS at 127.0.0.1:{port}: connection refused ([nats] url)"
    )


def test_an_unreachable_postgresql_names_the_server_and_never_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{port}/test"
    sections = {
        "node": {"groups": ["scoring"]},
        "scoring": {"postgres_dsn": dsn, "registry_dir": str(tmp_path / "cache")},
    }
    code, err = run(tmp_path, sections)
    assert code == 69, err[-3000:]
    assert last_line(err) == (
        f"levibot: error: cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused "
        "([scoring] postgres_dsn)"
    )
    assert "s3cret" not in err


def test_a_model_named_in_the_config_but_missing_stops_the_start(tmp_path: Path) -> None:
    models = tmp_path / "models"
    sections = {
        "node": {"groups": ["scoring"]},
        "scoring": {"model_id": "nosuch", "registry_dir": str(models)},
    }
    code, err = run(tmp_path, sections)
    assert code == 66, err[-3000:]
    assert last_line(err) == (
        f"levibot: error: cannot load active model 'nosuch': unknown model 'nosuch' in {models} "
        "([scoring] model_id)"
    )


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_an_unreadable_replay_file_names_the_file_and_the_setting(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "nosuch.csv" if kind == "missing" else tmp_path
    why = "no such file" if kind == "missing" else "is a directory"
    sections = {
        "node": {"groups": ["ingest"]},
        "feed": {"source": "replay"},
        "feed.replay": {"path": str(path)},
    }
    code, err = run(tmp_path, sections)
    assert code == 66, err[-3000:]
    assert last_line(err) == f"levibot: error: cannot read {path}: {why} ([feed.replay] path)"


def test_a_malformed_replay_file_is_a_data_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,what\n1,2\n")
    sections = {
        "node": {"groups": ["ingest"]},
        "feed": {"source": "replay"},
        "feed.replay": {"path": str(path), "kind": "klines"},
    }
    code, err = run(tmp_path, sections)
    assert code == 65, err[-3000:]
    line = last_line(err)
    assert line.startswith(f"levibot: error: {path}:1: ") and line.endswith("([feed.replay] path)")


def test_a_missing_config_file_is_an_unreadable_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "levibot", "run", "--config", str(tmp_path / "nosuch.toml")],
        capture_output=True,
        timeout=60,
    )
    err = result.stderr.decode()
    assert result.returncode == 66, err
    assert last_line(err) == f"levibot: error: config file not found: {tmp_path / 'nosuch.toml'}"


def test_run_help_documents_every_exit_code() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "levibot", "run", "--help"], capture_output=True, timeout=60
    )
    text = result.stdout.decode()
    for code, meaning in EXIT_CODES:
        assert f"{code:>3}  {meaning}" in text

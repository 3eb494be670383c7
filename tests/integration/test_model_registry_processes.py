"""One model registry for every process: the gateway, scoring and the trainer as separate
processes on a real PostgreSQL database and the real NATS server.

The trainer is ``levibot train`` (a child process) registering into the PostgreSQL registry.
The gateway and scoring are ``levibot run`` nodes (``NodeProcess``), each with a data dir of its
own that starts empty. What must hold: the gateway lists and scores with models it never saw
on disk; activation and rollback over REST (and activation from the CLI) move the persisted
pointer and the running scorer follows; a scoring process killed with SIGKILL and started
again serves the model last activated over REST; ``POST /retrain`` trains on the stored bars in
a child process, the gateway answering meanwhile, and the model lands in the shared registry.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, free_port, wait_until, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_NATS = NATS_URL
PEPPER = "registry-test-pepper"
H = 3_600_000_000_000


@dataclass
class Cluster:
    dsn: str
    config: Path
    tmp: Path
    gateway_port: int
    api_key: str = ""

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gateway_port}{path}", data=data, method=method,
            headers={"X-API-Key": self.api_key, "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def levibot(self, *args: str, timeout: float = 180) -> str:
        """Run the CLI as its own process (the trainer, the operator's terminal)."""
        proc = subprocess.run(
            [sys.executable, "-m", "levibot", *args], capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    def node(self, groups: str, data_dir: Path, name: str) -> NodeProcess:
        env = {"LEVIBOT__STORAGE__DATA_DIR": str(data_dir)}
        node = NodeProcess(self.config, "--groups", groups, log=self.tmp / f"{name}.log", env=env)
        node.wait_ready(90)
        return node


def health(node: NodeProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/health", timeout=5) as r:
        return dict(json.load(r))


def serving(node: NodeProcess) -> str | None:
    """Return the model the node's scoring actor serves as active."""
    model_id = health(node)["actors"]["scoring"]["model_id"]
    return None if model_id is None else str(model_id)


def write_csv(path: Path, seed: int) -> Path:
    from tests.unit.test_ml_dataset import random_bars

    bars = random_bars(1200, seed=seed)
    rows = zip(*(a.tolist() for a in bars.arrays()), strict=True)
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(
            f"{t // 1_000_000},{o!r},{h!r},{lo!r},{c!r},{v!r}\n" for t, o, h, lo, c, v in rows
        )
    )
    return path


async def migrate_and_store_bars(dsn: str) -> int:
    """Migrate the database and store 1,200 closed 1h bars of BTCUSDT (as the store would)."""
    import asyncpg

    from levibot.storage.migrate import migrate
    from tests.unit.test_ml_dataset import random_bars

    bars = random_bars(1200, seed=21)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.executemany(
            "INSERT INTO bars (symbol, venue, timeframe, start_ns, ts, ts_event, open, high,"
            " low, close, volume) VALUES ('BTCUSDT', 'binance', '1h', $1, $2, $3, $4, $5, $6,"
            " $7, $8)",
            [(int(t), datetime.fromtimestamp((int(t) + H) / 1e9, UTC), int(t) + H, o, h, lo,
              c, v) for t, o, h, lo, c, v in zip(*(a.tolist() for a in bars.arrays()),
                                                 strict=True)],
        )  # fmt: skip
    finally:
        await conn.close()
    return len(bars)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    from levibot.storage.testing import database

    with database() as dsn:
        bars = asyncio.run(migrate_and_store_bars(dsn))
        assert bars == 1200
        ns = f"reg{uuid.uuid4().hex[:10]}"
        port = free_port()
        config = write_config(
            tmp_path / "cluster.toml",
            {
                "node": {"drain_timeout_s": 5.0},
                "nats": {"url": SHARED_NATS, "namespace": ns, "stream": ns.upper()},
                "storage": {"postgres_dsn": dsn},
                "gateway": {"port": port, "jwt_secret": "x" * 32, "key_pepper": PEPPER},
            },
        )
        c = Cluster(dsn, config, tmp_path, port)
        out = c.levibot("keys", "--config", str(config), "create", "--name", "test",
                        "--scopes", "admin")  # fmt: skip
        c.api_key = next(x.split()[-1] for x in out.splitlines() if x.startswith("api key:"))
        yield c


def train(c: Cluster, horizon: int, *extra: str) -> str:
    """Train with the CLI (a process of its own) into the PostgreSQL registry; return the id."""
    csv = write_csv(c.tmp / f"k{horizon}.csv", seed=horizon)
    out = c.levibot(
        "train", "--config", str(c.config), "--data", str(csv), "--horizon", str(horizon),
        "--trees", "3", "--folds", "2", "--threads", "1", "--no-progress",
        "--registry", str(c.tmp / "trainer-cache"), *extra,
    )  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("registered "))
    assert "the PostgreSQL registry" in line, line
    return line.split()[1]


def test_every_process_shares_the_registry_and_a_restarted_scorer_serves_the_last_activation(
    cluster: Cluster,
) -> None:
    c = cluster
    first = train(c, 4, "--activate", "--force")  # a 3-tree model: past the promotion gate
    second = train(c, 2)
    assert first != second
    nodes: list[NodeProcess] = []
    try:
        scoring = c.node("scoring", c.tmp / "scoring-data", "scoring")
        nodes.append(scoring)
        assert serving(scoring) == first  # the persisted active model, picked up at start
        gateway_dir = c.tmp / "gateway-data"
        gateway = c.node("gateway", gateway_dir, "gateway")
        nodes.append(gateway)
        assert not (gateway_dir / "models").exists()  # nothing of its own on disk

        # The gateway lists the models the trainer registered, and scores with the active one.
        status, listed = c.request("GET", "/models")
        assert status == 200, listed
        assert listed["active"] == first
        assert {m["model_id"] for m in listed["models"]} == {first, second}
        row = want_row(c)
        status, scored = c.request("POST", "/predict", {"values": row})
        assert status == 200, scored
        assert scored["model_id"] == first
        assert scored["probability"] == pytest.approx(local_probability(c, first, row), abs=1e-6)

        # Activation over REST: the pointer moves, then the running scorer swaps.
        status, accepted = c.request(
            "POST", "/models/activate", {"model_id": second, "force": True}
        )
        assert status == 202, accepted
        assert active_in_postgres(c) == second
        wait_until(lambda: serving(scoring) == second, 30, "the running scorer swaps")
        status, scored = c.request("POST", "/predict", {"values": row})
        assert (status, scored["model_id"]) == (200, second)

        # Kill -9 and start again: the scorer serves the model last activated over REST.
        scoring.proc.kill()
        scoring.wait(10)
        scoring = c.node("scoring", c.tmp / "scoring-data", "scoring2")
        nodes.append(scoring)
        assert serving(scoring) == second

        # Rollback over REST: back to the first model, persisted and live; again after a kill.
        status, accepted = c.request("POST", "/models/rollback")
        assert status == 202, accepted
        assert active_in_postgres(c) == first
        wait_until(lambda: serving(scoring) == first, 30, "the running scorer rolls back")
        status, err = c.request("POST", "/models/rollback")
        assert (status, err["error"]["code"]) == (409, "nothing_to_roll_back")
        scoring.proc.kill()
        scoring.wait(10)
        scoring = c.node("scoring", c.tmp / "scoring-empty-data", "scoring3")  # a fresh cache too
        nodes.append(scoring)
        assert serving(scoring) == first

        # The CLI moves the same pointer and tells the running scorer.
        out = c.levibot("models", "--config", str(c.config), "activate", second, "--force")
        assert f"activated {second}" in out and "sent ActivateModel" in out
        wait_until(lambda: serving(scoring) == second, 30, "the scorer follows the CLI")
        assert c.request("GET", "/models")[1]["active"] == second
    finally:
        for node in nodes:
            node.kill()


def test_retrain_trains_on_stored_bars_in_a_child_process_into_the_shared_registry(
    cluster: Cluster,
) -> None:
    c = cluster
    gateway = c.node("gateway", c.tmp / "gateway-data", "gateway")
    try:
        # No data named: with a DSN, the stored BTCUSDT 1h bars (never a download).
        body = {"options": {"n_estimators": 3, "folds": 2, "num_threads": 1}}
        status, job = c.request("POST", "/retrain", body)
        assert status == 202, job
        # While the job trains, the gateway keeps answering (training is another process).
        answered_while_running = 0
        deadline = time.monotonic() + 240
        while True:
            status, state = c.request("GET", f"/retrain/{job['job_id']}")
            assert status == 200
            if state["status"] in ("succeeded", "failed"):
                break
            assert time.monotonic() < deadline, state
            if state["status"] == "running":
                assert c.request("GET", "/models")[0] == 200
                answered_while_running += 1
            time.sleep(0.05)
        assert state["status"] == "succeeded", state["error"]
        assert answered_while_running > 0
        result = state["result"]
        assert result["data"]["source"] == "postgres:BTCUSDT/1h"
        assert result["data"]["bars"] == 1200
        # In the shared registry: the gateway lists it, and so does another process (the CLI).
        listed = c.request("GET", "/models")[1]
        assert [m["model_id"] for m in listed["models"]] == [result["model_id"]]
        out = c.levibot("models", "--config", str(c.config), "--registry",
                        str(c.tmp / "cli-cache"), "list")  # fmt: skip
        assert result["model_id"] in out
        # The gateway's process did not train: LightGBM was never imported into it.
        assert "lightgbm" not in loaded_modules(gateway)
    finally:
        gateway.kill()


def loaded_modules(node: NodeProcess) -> str:
    """Return the names of the shared libraries mapped into the node's process."""
    return Path(f"/proc/{node.proc.pid}/maps").read_text()


def want_row(c: Cluster) -> list[float]:
    from levibot.features import SCHEMA
    from levibot.ml.testing import synthetic_rows

    return [float(v) for v in synthetic_rows(1, len(SCHEMA.names), seed=5)[0]]


def local_probability(c: Cluster, model_id: str, row: list[float]) -> float:
    """Score ``row`` here, with the model's files fetched from PostgreSQL into a cache."""
    import numpy as np

    from levibot.ml.registry_pg import PgModelRegistry
    from levibot.ml.scorer import Scorer

    async def fetch() -> tuple[Any, Path]:
        async with PgModelRegistry(c.dsn, c.tmp / "test-cache") as reg:
            return await reg.get(model_id), await reg.path(model_id)

    card, path = asyncio.run(fetch())
    return float(Scorer(card, path).predict(np.asarray([row]))[0])


def active_in_postgres(c: Cluster) -> str | None:
    """Read the persisted pointer straight from its table."""
    import asyncpg

    async def read() -> str | None:
        conn = await asyncpg.connect(c.dsn)
        try:
            top = await conn.fetchval("SELECT model_id FROM ml_active ORDER BY seq DESC LIMIT 1")
            return None if top is None else str(top)
        finally:
            await conn.close()

    return asyncio.run(read())

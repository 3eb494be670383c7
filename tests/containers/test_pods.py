"""levibot's pods as real containers: the image built here, one container per actor group.

Each container is configured only by ``LEVIBOT__…`` environment variables, taken from the
rendered ``deploy/`` manifests (ConfigMap, the pod's env, its secrets) and run with the pod's
security context and volumes (see ``pods.run_args``); the test overrides only where this
machine's NATS (JetStream), PostgreSQL and Redis are, the namespace and the ports.

(a) every group's container turns /ready; the gateway's REST, websocket and Mini App answer
from its container. (e) they run as the non-root user on a read-only root filesystem with only
the manifests' volumes writable. (b) a replay of real bars through the containers publishes
byte-identical orders and fills to the single binary's (tests/e2e/test_split_invariant.py).
(c) ``podman kill -s KILL`` of execution, scoring and ingest in turn mid-replay, each then
restarted: still the single binary's orders and fills, none twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import nats
import pytest

from levibot.data import ensure_btcusdt
from levibot.messages import Fill, OrderAccepted, OrderClosed, OrderDenied, OrderIntent
from levibot.messages.codec import Codec
from levibot.storage.testing import database
from levibot.testing import wait_until
from sidecars.gateway.auth.tokens import MINIAPP_ISSUER
from tests.containers.pods import (
    Container,
    build_image,
    free_port,
    get,
    node_ports,
    pod_env,
    require_podman,
    run_args,
    workloads,
)
from tests.e2e.test_split_invariant import BARS, run_single

pytestmark = [pytest.mark.containers, pytest.mark.integration, pytest.mark.slow]

SHARED_NATS = "nats://127.0.0.1:4222"
JWT_SECRET = "container-test-jwt-secret-0123456789abcdef"
# (container name, workload, pod index): the pipeline's groups, scoring at two partitions.
PODS = [
    ("ingest", "StatefulSet/levibot-ingest", 0),
    ("scoring-0", "StatefulSet/levibot-scoring", 0),
    ("scoring-1", "StatefulSet/levibot-scoring", 1),
    ("execution", "StatefulSet/levibot-execution", 0),
    ("store", "StatefulSet/levibot-store", 0),
    ("gateway", "Deployment/levibot-gateway", 0),
]


@pytest.fixture(scope="module")
def image() -> str:
    require_podman()
    return build_image()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The single binary's orders and fills on the replay (tests/e2e/test_split_invariant)."""
    orders = run_single(tmp_path_factory.mktemp("single"))
    assert len(orders) > 10, "the strategy should trade on 1,500 real bars"
    return orders


@pytest.fixture
def dsn() -> Iterator[str]:
    with database() as url:
        yield url


class PodSet:
    """The pipeline's containers for one test: its own NATS namespace, database, Redis db."""

    def __init__(self, image: str, tmp: Path, dsn: str) -> None:
        self.image, self.tmp, self.dsn = image, tmp, dsn
        self.ns = f"ctr{uuid.uuid4().hex[:8]}"
        self.redis = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
        self.objects = workloads()
        self.secrets = {
            "postgres-dsn": dsn,
            "jwt-secret": JWT_SECRET,
            "key-pepper": "container-test-pepper",
        }
        self.containers: dict[str, Container] = {}
        self.gateway_port = 0

    def make(self, name: str, workload: str, index: int, extra: dict[str, str]) -> Container:
        env = pod_env(self.objects, workload, self.secrets, index)
        # This machine's servers instead of the cluster's Services; a namespace per test.
        env.update(
            LEVIBOT__NATS__URL=SHARED_NATS,
            LEVIBOT__NATS__NAMESPACE=self.ns,
            LEVIBOT__NATS__STREAM=self.ns.upper(),
        )
        for key, value in env.items():
            if value.startswith("redis://redis:6379"):
                env[key] = self.redis
        port = node_ports(env)
        if "LEVIBOT__GATEWAY__PORT" in env:
            self.gateway_port = free_port()
            env["LEVIBOT__GATEWAY__PORT"] = str(self.gateway_port)
        env.update(extra)
        args = run_args(self.objects, workload, self.tmp / name)
        container = Container(f"lbt-{self.ns}-{name}", self.image, env, args, port=port)
        self.containers[name] = container
        return container

    def start_in_order(self, names: list[str]) -> dict[str, float]:
        """Start the named containers one by one, each once the previous is ready, the store
        first (it runs the migrations the gateway needs; on Kubernetes the gateway would
        restart until they are there). One at a time: six Python processes importing numpy,
        LightGBM and ONNX Runtime at once on two shared cores time out their NATS set-up.
        Return each one's seconds from start to /ready."""
        ready = {}
        for name in sorted(names, key=lambda n: n != "store"):
            self.containers[name].start()
            ready[name] = round(self.containers[name].wait_ready(180), 1)
        return ready

    def remove(self) -> None:
        for container in self.containers.values():
            container.remove()


@pytest.fixture
def pods(image: str, tmp_path: Path, dsn: str) -> Iterator[PodSet]:
    pod_set = PodSet(image, tmp_path, dsn)
    try:
        yield pod_set
    finally:
        pod_set.remove()


async def websocket_frames(port: int) -> list[dict[str, Any]]:
    """Subscribe to ticks on the gateway's /ws; return the frames up to the first tick event
    (the synthetic feed's ticks, from the ingest container through NATS)."""
    # A Mini App session token (what /app hands a Telegram user), signed with the pod's secret.
    exp = int(time.time()) + 300
    claims = {"iss": MINIAPP_ISSUER, "sub": "tg:1", "scopes": ["read"], "exp": exp}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    url = f"http://127.0.0.1:{port}/ws?token={token}"
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"op": "subscribe", "channels": ["ticks"]})
        while not frames or frames[-1].get("type") != "event":
            frames.append(await ws.receive_json(timeout=30))
    return frames


def test_every_group_turns_ready_as_non_root_on_a_read_only_root(pods: PodSet) -> None:
    # No Binance from here: ingest's feed is synthetic; everything else is the manifests'.
    for name, workload, index in PODS:
        extra = {"LEVIBOT__FEED__SOURCE": "synthetic"} if name == "ingest" else {}
        pods.make(name, workload, index, extra)
    ready = pods.start_in_order(list(pods.containers))
    print(f"\ntime to /ready (s): {json.dumps(ready)}")

    # (a) the gateway's REST, OpenAPI, websocket and Mini App, from its container.
    port = pods.gateway_port
    assert get(port, "/health", 30) == 200
    assert get(port, "/openapi.json", 30) == 200  # built on first request: seconds here
    assert get(port, "/app", 30) == 200
    assert get(port, "/ws", 30) == 401  # no token: refused, by the gateway, not by a missing route
    frames = asyncio.run(websocket_frames(port))
    assert frames[0]["type"] == "snapshot", frames[0]
    assert frames[-1]["channel"] == "ticks", frames[-1]

    # (e) the non-root user, a read-only root, and only the manifests' volumes writable.
    for name, container in pods.containers.items():
        info = container.inspect()
        assert info["Config"]["User"] == "10001:10001", name
        assert info["HostConfig"]["ReadonlyRootfs"] is True, name
        probe = container.exec(
            "python", "-c",
            "import os; print(os.getuid(), os.getgid());"
            "[open(p + '/w', 'w').close() for p in ('/app/var', '/tmp')];"
            "open('/app/x', 'w')",
        )  # fmt: skip
        assert probe.stdout.split() == ["10001", "10001"], (name, probe.stderr)
        assert "Read-only file system" in probe.stderr, (name, probe.stderr)
        mounts = container.exec("cat", "/proc/mounts").stdout
        tmpfs = {line.split()[1] for line in mounts.splitlines() if line.startswith("tmpfs")}
        assert {"/tmp", "/app/var"} <= tmpfs or name in ("execution", "store"), (name, tmpfs)

    # Drain on SIGTERM within the pod's grace period, exit 0 (the kubelet's stop).
    for name, container in pods.containers.items():
        assert container.stop(grace=30) == 0, (name, container.logs())


def replay_env(nodes: int, data: str) -> dict[str, str]:
    """The settings of test_split_invariant's replay, as environment variables."""
    return {
        "LEVIBOT__NODE__REPLAY": "true",
        "LEVIBOT__NODE__DRAIN_TIMEOUT_S": "30",
        "LEVIBOT__NATS__SETTLE_NODES": str(nodes),
        "LEVIBOT__FEED__SOURCE": "replay",
        "LEVIBOT__FEED__BARS": "[]",
        "LEVIBOT__FEED__REPLAY__PATH": data,
        "LEVIBOT__FEED__REPLAY__LIMIT": str(BARS),
        "LEVIBOT__SCORING__STRATEGIES": '["ema_cross"]',
        "LEVIBOT__RISK__PRESET": "normal",
        "LEVIBOT__RISK__SIZING": "all_in",
        "LEVIBOT__RISK__PERSIST": "false",
        "LEVIBOT__RISK__DECIDE_AFTER_PORTFOLIO": "true",
        "LEVIBOT__ORDER__FILL": "next_open",
        "LEVIBOT__ORDER__PERSIST": "false",
    }


async def published_orders(ns: str) -> list[str]:
    """Return the orders and fills in the namespace's stream, in order, as the order log
    writes them (msgpack, hex)."""
    wanted = (OrderIntent, OrderDenied, Fill)
    codec = Codec([*wanted, OrderAccepted, OrderClosed])  # Fill shares its subject with these
    roots = tuple(f"{ns}.{t.subject_root}" for t in wanted)
    nc = await nats.connect(SHARED_NATS)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(ns.upper())).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1):
            raw = await js.get_msg(ns.upper(), seq)
            if raw.subject and raw.subject.startswith(roots) and raw.data:
                msg = codec.decode(raw.data)
                if isinstance(msg, wanted):
                    out.append(codec.encode(msg).hex())
        return out
    finally:
        await nc.close()


def test_replay_through_containers_gives_the_single_binarys_orders_and_fills(
    pods: PodSet, single: list[str]
) -> None:
    data = ensure_btcusdt()
    env = replay_env(len(PODS), f"/data/{data.name}")
    for name, workload, index in PODS:
        container = pods.make(name, workload, index, env)
        container.args += ["--volume", f"{data.parent}:/data:ro"]
    ingest = pods.containers["ingest"]
    ingest.env["LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE"] = "true"
    downstream = [name for name in pods.containers if name != "ingest"]
    pods.start_in_order(downstream)
    started = time.monotonic()
    ingest.start()
    assert ingest.wait_exit(300) == 0, ingest.logs()
    print(f"\nreplay of {BARS} bars through the containers: {time.monotonic() - started:.1f} s")
    for name in downstream:
        container = pods.containers[name]
        assert container.stop(grace=30) == 0, (name, container.logs())

    orders = asyncio.run(published_orders(pods.ns))
    assert orders == single


def bars_emitted(port: int) -> float:
    """The ingest node's count of market data it emitted (its /metrics)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("levibot_feed_messages_total")
    )


def test_kill_9_of_each_group_in_turn_then_restart_loses_and_repeats_nothing(
    pods: PodSet, single: list[str]
) -> None:
    data = ensure_btcusdt()
    # As tests/e2e/test_chaos.py: every type on JetStream, so what a group misses while it is
    # down is redelivered; execution's state persisted on its volume (the PVC).
    env = replay_env(len(PODS), f"/data/{data.name}") | {
        "LEVIBOT__NATS__DURABLE_ALL": "true",
        "LEVIBOT__NATS__ACK_WAIT_S": "5",
        "LEVIBOT__RISK__PERSIST": "true",
        "LEVIBOT__ORDER__PERSIST": "true",
    }
    for name, workload, index in PODS:
        container = pods.make(name, workload, index, env)
        container.args += ["--volume", f"{data.parent}:/data:ro"]
    ingest = pods.containers["ingest"]
    ingest.env["LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE"] = "true"
    downstream = [name for name in pods.containers if name != "ingest"]
    pods.start_in_order(downstream)
    ingest.start()
    before = 0
    for group, at in (
        ("execution", BARS // 5),
        ("scoring-0", 2 * BARS // 5),
        ("ingest", 3 * BARS // 5),
    ):
        wait_until(lambda at=at: bars_emitted(ingest.port) >= at, 180, f"{at} bars")
        before = before or len(asyncio.run(published_orders(pods.ns)))
        victim = pods.containers[group]
        victim.kill()  # podman kill -s KILL: no drain, nothing flushed that was not durable
        assert victim.wait_exit(30) != 0
        victim.start()  # the same name, configuration and volumes: what the StatefulSet does
        if group != "ingest":  # a restarted ingest may finish its replay before a poll
            victim.wait_ready(180)
    assert ingest.wait_exit(300) == 0, ingest.logs()
    for name in downstream:
        container = pods.containers[name]
        assert container.stop(grace=30) == 0, (name, container.logs())

    orders = asyncio.run(published_orders(pods.ns))
    assert 0 < before < len(orders), "the first kill should fall between the first and last order"
    assert len(orders) == len(set(orders)), "an order or fill was published twice"
    assert orders == single  # none lost, same decisions, same fills, so the same portfolio

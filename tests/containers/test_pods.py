"""levibot's pods as real containers: the image built here, one container per actor group.

Each container is configured only by ``LEVIBOT__…`` environment variables, taken from the
rendered ``deploy/`` manifests (ConfigMap, the pod's env, its secrets) and run with the pod's
security context and volumes (see ``pods.run_args``). Each test runs its own NATS with the
manifests' ``nats.conf`` (a user per group, subject permissions; ``pods.BusServer``) and a Redis
with a password, every credential random and handed over as the Secret's keys; the test
overrides only the NATS URL, the ports (host network) and, live, ingest's feed.

(a) every group's container turns /ready; the gateway's REST, websocket and Mini App answer
from its container. (e) they run as the non-root user on a read-only root filesystem with only
the manifests' volumes writable. (b) a replay of real bars through the containers publishes
byte-identical orders and fills to the single binary's (tests/e2e/test_split_invariant.py).
(c) ``podman kill -s KILL`` of execution, scoring and ingest in turn mid-replay, each then
restarted: still the single binary's orders and fills, none twice. Least privilege: from
inside the pods, the gateway is refused order intents and fills, scoring commands. (d) a
rolling restart of every group under live load (SIGTERM, drain, a new container): no durable
message lost or twice; the market data each group missed while away is counted.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import nats
import nats.js.errors
import pytest

from levibot.data import ensure_btcusdt
from levibot.messages import (
    CORE_TYPES,
    Fill,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    SetTradingState,
    StartStrategy,
    TradingState,
)
from levibot.messages.codec import Codec
from levibot.storage.testing import database
from levibot.testing import wait_until
from sidecars.gateway.auth.tokens import MINIAPP_ISSUER
from tests.containers.pods import (
    BusServer,
    Container,
    RedisServer,
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

JWT_SECRET = "container-test-jwt-secret-0123456789abcdef"
STREAM = "LEVIBOT"  # the manifests set no namespace or stream: the defaults
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
    """The pipeline's containers for one test, with their own NATS (the manifests' nats.conf:
    a user per group, subject permissions) and Redis (with a password); a database of its own.
    Every credential is random and reaches the pods as the Secret's keys do."""

    def __init__(self, image: str, tmp: Path, dsn: str) -> None:
        self.image, self.tmp, self.dsn = image, tmp, dsn
        self.id = uuid.uuid4().hex[:8]
        self.objects = workloads()
        self.nats = BusServer(self.objects, tmp)
        self.redis = RedisServer(tmp)
        self.secrets = {
            "postgres-dsn": dsn,
            "jwt-secret": JWT_SECRET,
            "key-pepper": "container-test-pepper",
            "redis-url": self.redis.url,
            "redis-password": self.redis.password,
            **self.nats.secrets(),
        }
        self.containers: dict[str, Container] = {}

    def start_servers(self) -> None:
        self.nats.start()
        self.redis.start()

    def make(self, name: str, workload: str, index: int, extra: dict[str, str]) -> Container:
        env = pod_env(self.objects, workload, self.secrets, index)
        # This machine's NATS instead of the cluster's Service (user and password: the pod's).
        assert env["LEVIBOT__NATS__URL"] == "nats://nats:4222", env["LEVIBOT__NATS__URL"]
        env["LEVIBOT__NATS__URL"] = self.nats.url
        port = node_ports(env)
        if "LEVIBOT__GATEWAY__PORT" in env:
            env["LEVIBOT__GATEWAY__PORT"] = str(free_port())
        env.update(extra)
        args = run_args(self.objects, workload, self.tmp / name)
        container = Container(f"lbt-{self.id}-{name}", self.image, env, args, port=port)
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
            ready[name] = round(self.containers[name].start_ready(180), 1)
        return ready

    def remove(self) -> None:
        for container in self.containers.values():
            container.remove()
        self.nats.stop()
        self.redis.stop()


@pytest.fixture
def pods(image: str, tmp_path: Path, dsn: str) -> Iterator[PodSet]:
    pod_set = PodSet(image, tmp_path, dsn)
    try:
        pod_set.start_servers()
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


# Run inside a pod: connect as the pod's NATS user (its environment: LEVIBOT__NATS__USER,
# LEVIBOT__NATS__PASSWORD) and try a JetStream publish on each subject (then a core publish on
# lb.settle, which every group may use); print what happened and the server's errors.
TRY_PUBLISH = """
import asyncio, json, sys
import nats
from levibot.bus.connect import connect_options
from levibot.settings import load_settings

async def main(subjects):
    cfg = load_settings().nats
    errors = []
    async def on_error(exc):
        errors.append(str(exc))
    nc = await nats.connect(cfg.url, error_cb=on_error, **connect_options(cfg))
    results = {}
    for subject in subjects:
        try:
            await nc.jetstream().publish(subject, b"forged", timeout=2)
            results[subject] = "accepted"
        except Exception as exc:
            results[subject] = type(exc).__name__
    await nc.publish("lb.settle", b"")
    await nc.flush(timeout=2)
    results["lb.settle"] = "sent"
    await asyncio.sleep(0.5)
    await nc.close()
    print(json.dumps({"results": results, "errors": errors}))

asyncio.run(main(sys.argv[1:]))
"""


def try_publish(container: Container, subjects: list[str]) -> dict[str, Any]:
    """Try to publish on ``subjects`` from inside ``container`` as its NATS user."""
    result = container.exec("python", "-c", TRY_PUBLISH, *subjects)
    assert result.returncode == 0, result.stderr[-2000:]
    tried: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return tried


async def stored_on(bus: BusServer, subjects: list[str]) -> list[str]:
    """Return those of ``subjects`` that have a message in the stream."""
    nc = await admin(bus)
    try:
        js, found = nc.jetstream(), []
        for subject in subjects:
            try:
                await js.get_last_msg(STREAM, subject)
                found.append(subject)
            except nats.js.errors.NotFoundError:
                pass
        return found
    finally:
        await nc.close()


def test_every_group_turns_ready_as_non_root_on_a_read_only_root(pods: PodSet) -> None:
    # No Binance from here: ingest's feed is synthetic; everything else is the manifests'.
    for name, workload, index in PODS:
        extra = {"LEVIBOT__FEED__SOURCE": "synthetic"} if name == "ingest" else {}
        pods.make(name, workload, index, extra)
    ready = pods.start_in_order(list(pods.containers))
    print(f"\ntime to /ready (s): {json.dumps(ready)}")

    # (a) the gateway's REST, OpenAPI, websocket and Mini App, from its container.
    port = int(pods.containers["gateway"].env["LEVIBOT__GATEWAY__PORT"])
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

    # Least privilege on the bus, tried from inside the pods with their own NATS user: the
    # gateway cannot publish an order intent or a fill, scoring cannot publish a command.
    forbidden = {
        "gateway": ["lb.order.intent.BTCUSDT", "lb.order.event.BTCUSDT"],
        "scoring-0": ["lb.ctl.risk", "lb.order.intent.BTCUSDT"],
    }
    for name, subjects in forbidden.items():
        tried = try_publish(pods.containers[name], subjects)
        for subject in subjects:
            assert tried["results"][subject] != "accepted", (name, subject, tried)
            refused = f'permissions violation for publish to "{subject.lower()}"'
            assert any(refused in e.lower() for e in tried["errors"]), (name, tried)
        assert tried["results"]["lb.settle"] == "sent", tried  # an allowed subject goes through
        assert asyncio.run(stored_on(pods.nats, subjects)) == [], (name, subjects)
    # The server refused exactly these four, and nothing the pipeline itself does.
    refused = {(line.split('"$G/user:')[1].split('"')[0], line.rsplit('"', 2)[1])
               for line in pods.nats.violations()}  # fmt: skip
    assert refused == {
        ("gateway", "lb.order.intent.BTCUSDT"), ("gateway", "lb.order.event.BTCUSDT"),
        ("scoring", "lb.ctl.risk"), ("scoring", "lb.order.intent.BTCUSDT"),
    }, pods.nats.violations()  # fmt: skip

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


async def admin(bus: BusServer) -> Any:
    """A connection as the operators' ``admin`` NATS user."""
    return await nats.connect(bus.url, user="admin", password=bus.passwords["admin"])


async def published_orders(bus: BusServer) -> list[str]:
    """Return the orders and fills in the stream, in order, as the order log writes them
    (msgpack, hex)."""
    wanted = (OrderIntent, OrderDenied, Fill)
    codec = Codec([*wanted, OrderAccepted, OrderClosed])  # Fill shares its subject with these
    roots = tuple(t.subject_root for t in wanted)
    nc = await admin(bus)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1):
            raw = await js.get_msg(STREAM, seq)
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

    orders = asyncio.run(published_orders(pods.nats))
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
        before = before or len(asyncio.run(published_orders(pods.nats)))
        victim = pods.containers[group]
        victim.kill()  # podman kill -s KILL: no drain, nothing flushed that was not durable
        assert victim.wait_exit(30) != 0
        # The same name, configuration and volumes: what the StatefulSet does.
        if group == "ingest":  # a restarted ingest may finish its replay before a poll
            victim.start()
        else:
            victim.start_ready(180)
    assert ingest.wait_exit(300) == 0, ingest.logs()
    for name in downstream:
        container = pods.containers[name]
        assert container.stop(grace=30) == 0, (name, container.logs())

    orders = asyncio.run(published_orders(pods.nats))
    assert 0 < before < len(orders), "the first kill should fall between the first and last order"
    assert len(orders) == len(set(orders)), "an order or fill was published twice"
    assert orders == single  # none lost, same decisions, same fills, so the same portfolio


# -- (d) a rolling restart under live load ----------------------------------------------------

# Live mode, as in production: synthetic ticks (two symbols) aggregated into 1 s bars, features,
# ema_cross signals, orders filled at the bar's close; execution keeps its state on its volume.
LIVE = {
    "LEVIBOT__FEED__SOURCE": "synthetic",
    "LEVIBOT__FEED__BARS": '["1s"]',
    "LEVIBOT__FEED__SYNTHETIC__RATE": "100",
    "LEVIBOT__FEED__SYNTHETIC__VOLATILITY_BPS": "10",
    "LEVIBOT__SCORING__STRATEGIES": '["ema_cross"]',
    "LEVIBOT__SCORING__EMA_CROSS__FAST": "2",  # short spans: crossings (orders) every few bars
    "LEVIBOT__SCORING__EMA_CROSS__SLOW": "5",
    "LEVIBOT__RISK__PRESET": "off",
    "LEVIBOT__RISK__SIZING": "all_in",
    "LEVIBOT__ORDER__FILL": "close",
}
# The order of the roll: each group is stopped (SIGTERM, drain), replaced and ready before the
# next, as `kubectl rollout restart` does one pod at a time.
ROLL = ["ingest", "scoring-0", "scoring-1", "execution", "store", "gateway"]


class CommandLoad:
    """Durable load from outside: commands published as the operators' ``admin`` NATS user at
    a steady rate (SetTradingState(active) for execution, StartStrategy(ema_cross) for scoring;
    both harmless to the run), in a thread, until ``stop``. ``acked`` holds the command ids
    NATS accepted."""

    def __init__(self, bus: BusServer, rate: float = 5.0) -> None:
        self.bus, self.rate = bus, rate
        self.acked: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        codec = Codec([SetTradingState, StartStrategy])
        nc = await admin(self.bus)
        js = nc.jetstream()
        try:
            i = 0
            while not self._stop.is_set():
                now = time.time_ns()
                cid = f"roll-{i}"
                cmd: Any = (
                    SetTradingState(ts_event=now, ts_init=now, command_id=cid,
                                    state=TradingState.ACTIVE, issued_by="test")
                    if i % 2 == 0 else
                    StartStrategy(ts_event=now, ts_init=now, command_id=cid,
                                  strategy="ema_cross", issued_by="test")
                )  # fmt: skip
                try:
                    headers = {"Nats-Msg-Id": cmd.dedup_id(), "Lb-Origin": "test"}
                    await js.publish(cmd.subject(), codec.encode(cmd), timeout=5, headers=headers)
                    self.acked.append(cid)
                except Exception:
                    self.failed += 1
                i += 1
                await asyncio.sleep(1 / self.rate)
        finally:
            await nc.close()


async def consumers(bus: BusServer) -> dict[str, tuple[int, int]]:
    """Each durable consumer of the stream: (messages not yet delivered, delivered not acked)."""
    nc = await admin(bus)
    try:
        js = nc.jetstream()
        out = {}
        for info in await js.consumers_info(STREAM):
            out[info.name] = (info.num_pending, info.num_ack_pending)
        return out
    finally:
        await nc.close()


async def stream_messages(bus: BusServer) -> list[Any]:
    """Decode every levibot message in the stream (durable types), in order."""
    codec = Codec(list(CORE_TYPES))
    nc = await admin(bus)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                raw = await js.get_msg(STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            if raw.data:
                out.append(codec.decode(raw.data))
        return out
    finally:
        await nc.close()


def counter(port: int, name: str, **labels: str) -> float:
    """Sum of metric ``name`` (series matching ``labels``) on the node at ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key.split("{", 1)[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += float(value)
    return total


def test_rolling_restart_under_live_load_loses_no_durable_message(pods: PodSet, dsn: str) -> None:
    for name, workload, index in PODS:
        pods.make(name, workload, index, LIVE)
    ready = pods.start_in_order([n for n in pods.containers if n != "ingest"])
    ingest = pods.containers["ingest"]
    ready["ingest"] = round(ingest.start_ready(180), 1)
    load = CommandLoad(pods.nats)
    load.start()

    def ticks() -> float:
        return counter(ingest.port, "levibot_feed_messages_total", type="Tick")

    def bars() -> float:
        return counter(ingest.port, "levibot_feed_bars_built_total")

    # Let the strategy warm up and trade a little before the roll.
    wait_until(lambda: counter(ingest.port, "levibot_feed_bars_built_total") >= 40, 180, "bars")
    report: dict[str, dict[str, float]] = {}
    emitted = 0.0  # ticks of the ingest incarnations already stopped
    for name in ROLL:
        container = pods.containers[name]
        before = (ticks(), bars()) if name != "ingest" else (0.0, 0.0)
        started = time.monotonic()
        if name == "ingest":
            emitted += ticks()
        assert container.stop(grace=30) == 0, (name, container.logs())  # SIGTERM, drain, exit 0
        stopped = time.monotonic()
        container.start_ready(180)  # a new container, the same configuration and volumes
        # Market data published while this group was away is lost to it (core NATS keeps
        # nothing; the nodes count only gaps they could see): the ingest's counts over the
        # window are that loss. (While ingest itself is away nothing is produced.)
        after = (ticks(), bars()) if name != "ingest" else (0.0, 0.0)
        report[name] = {
            "drain_s": round(stopped - started, 1),
            "down_s": round(time.monotonic() - stopped, 1),
            "ticks_missed": after[0] - before[0],
            "bars_missed": after[1] - before[1],
        }
        time.sleep(3)  # under load between two steps, as a rollout's minReadySeconds
    load.stop()
    emitted += ticks()

    # Quiet: every durable consumer has had everything and acked it.
    def drained() -> bool:
        return all(p == 0 and a == 0 for p, a in asyncio.run(consumers(pods.nats)).values())

    wait_until(drained, 120, "every durable consumer caught up")
    gaps = {
        n: counter(c.port, "levibot_nats_ingress_gaps_total") for n, c in pods.containers.items()
    }
    dropped = counter(ingest.port, "levibot_nats_egress_dropped_total")
    for name, container in pods.containers.items():
        assert container.stop(grace=30) == 0, (name, container.logs())

    # No durable message lost or doubled: every command NATS accepted reached the store's audit
    # log once; every order intent has exactly one outcome; no fill twice.
    assert load.acked and load.failed == 0, (len(load.acked), load.failed)
    audit = asyncio.run(audit_ids(dsn))
    assert sorted(audit) == sorted(set(audit)), "a command was stored twice"
    assert set(load.acked) <= set(audit), f"lost: {sorted(set(load.acked) - set(audit))[:5]}"
    messages = asyncio.run(stream_messages(pods.nats))
    intents = [m for m in messages if isinstance(m, OrderIntent)]
    fills = [m for m in messages if isinstance(m, Fill)]
    # An intent's outcome: its fill, or its rejection (exit fills carry "<entry>:<reason>").
    outcomes = Counter(
        m.client_order_id
        for m in messages
        if isinstance(m, Fill) or (isinstance(m, OrderClosed) and m.reason == "rejected")
    )
    assert len({i.client_order_id for i in intents}) == len(intents), "an intent twice"
    missing = [i.client_order_id for i in intents if outcomes[i.client_order_id] != 1]
    assert not missing, f"intents without exactly one outcome: {missing[:5]}"
    assert len({f.fill_id for f in fills}) == len(fills), "a fill twice"
    summary = {
        "ready_s": ready, "roll": report, "commands": len(load.acked), "intents": len(intents),
        "fills": len(fills), "ticks_emitted": emitted, "gaps_counted": gaps,
        "ingest_egress_dropped": dropped,
    }  # fmt: skip
    print(f"\nrolling restart: {json.dumps(summary)}")


async def audit_ids(dsn: str) -> list[str]:
    """The command ids in the store's audit log."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT command_id FROM audit_log WHERE command_id LIKE 'roll-%'")
        return [r["command_id"] for r in rows]
    finally:
        await conn.close()

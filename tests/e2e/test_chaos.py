"""Chaos with the real pipeline: kill -9 each group process in turn mid-stream and restart it.

The groups (ingest | scoring | execution) replay real BTCUSDT bars over a real NATS server with
every type on JetStream (``durable_all``) and settle rounds after each bar. The final portfolio
and every order and fill must equal those of an undisturbed run: nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from levibot.data import ensure_btcusdt, load_klines
from levibot.messages import CORE_TYPES, Codec, Fill, OrderIntent, PortfolioSnapshot
from levibot.ml.dataset import Bars
from levibot.ml.registry import ModelRegistry
from levibot.ml.train import TrainConfig, train_model
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, wait_until, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BARS = 1_200
GROUPS = ("execution", "scoring", "ingest")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on the real data before the replayed span (no look-ahead)."""
    root = tmp_path_factory.mktemp("models")
    k = load_klines(ensure_btcusdt())
    span = slice(BARS, BARS + 6_000)
    bars = Bars(ts=k.ts[span], open=k.open[span], high=k.high[span], low=k.low[span],
                close=k.close[span], volume=k.volume[span])  # fmt: skip
    train_model(
        bars=bars, config=TrainConfig(n_estimators=30, folds=2),
        registry=ModelRegistry(root), activate=True, force=True, progress=False,
    )  # fmt: skip
    return root


def config(tmp: Path, name: str, models: Path) -> tuple[Path, str]:
    ns = f"chaos{uuid.uuid4().hex[:8]}"
    path = write_config(
        tmp / f"{name}.toml",
        {
            "node": {"replay": True, "drain_timeout_s": 30.0},
            "storage": {"data_dir": str(tmp / name)},
            "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper(),
                     "settle_nodes": 3, "durable_all": True, "ack_wait_s": 5.0},
            "feed": {},
            "feed.replay": {"path": str(ensure_btcusdt()), "limit": BARS},
            "scoring": {"strategies": ["onnx"], "registry_dir": str(models),
                        "max_model_age_s": 0.0},
            "risk": {"preset": "normal", "sizing": "all_in", "state_dir": str(tmp / name / "risk"),
                     "decide_after_portfolio": True},
            "order": {"fill": "next_open", "state_dir": str(tmp / name / "order")},
        },
    )  # fmt: skip
    return path, ns


def bars_emitted(node: NodeProcess) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("levibot_feed_messages_total")
    )


def start(cfg: Path, group: str, tmp: Path, tag: str) -> NodeProcess:
    env = {"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"} if group == "ingest" else None
    node = NodeProcess(cfg, "--groups", group, log=tmp / f"{tag}-{group}.log", env=env)
    if group != "ingest":
        node.wait_ready()
    return node


def run(tmp: Path, models: Path, tag: str, kills: dict[str, int]) -> str:
    """Run the split pipeline; kill -9 and restart ``group`` once ``bars`` were emitted."""
    cfg, ns = config(tmp, tag, models)
    nodes = {g: start(cfg, g, tmp, tag) for g in GROUPS}
    try:
        for group, at in kills.items():
            wait_until(lambda at=at: bars_emitted(nodes["ingest"]) >= at, 120, f"{at} bars")
            nodes[group].proc.kill()
            nodes[group].proc.wait(10)
            nodes[group].wait(1)
            nodes[group] = start(cfg, group, tmp, f"{tag}-restarted")
        assert nodes["ingest"].wait(300) == 0, nodes["ingest"].tail()
    finally:
        for group in ("scoring", "execution"):
            nodes[group].signal(signal.SIGTERM)
            nodes[group].wait(60)
    return ns


async def stream_messages(ns: str, subject: str) -> list[Any]:
    codec = Codec(CORE_TYPES)
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    info = await js.stream_info(ns.upper())
    sub = await js.pull_subscribe(f"{ns}.{subject}", stream=ns.upper())
    out: list[Any] = []
    try:
        while True:
            try:
                batch = await sub.fetch(500, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break  # the stream is read to its end
            for raw in batch:
                out.append(codec.decode(raw.data))
                await raw.ack()
    finally:
        await nc.close()
    assert info.state.messages > 0
    return out


def outcome(ns: str) -> dict[str, Any]:
    events = asyncio.run(stream_messages(ns, "lb.order.>"))
    snapshots = asyncio.run(stream_messages(ns, "lb.portfolio"))
    fills = [msgspec.to_builtins(m) for m in events if isinstance(m, Fill)]
    intents = [m.client_order_id for m in events if isinstance(m, OrderIntent)]
    last = snapshots[-1]
    assert isinstance(last, PortfolioSnapshot)
    return {"fills": fills, "intents": intents, "portfolio": msgspec.to_builtins(last)}


def test_kill_9_of_each_group_in_turn_changes_no_order_fill_or_portfolio(
    tmp_path: Path, models: Path
) -> None:
    calm = outcome(run(tmp_path, models, "calm", {}))
    assert len(calm["fills"]) >= 4, "the model should trade on the replayed span"
    chaos = outcome(
        run(tmp_path, models, "chaos", {"execution": 300, "scoring": 600, "ingest": 900})
    )
    assert len(chaos["intents"]) == len(set(chaos["intents"]))  # none twice
    assert chaos["intents"] == calm["intents"]  # none lost
    assert chaos["fills"] == calm["fills"]
    assert chaos["portfolio"] == calm["portfolio"]

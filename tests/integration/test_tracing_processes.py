"""One tick's trace across three processes: the real pipeline split into three ``levibot run``
processes over the real NATS server, each with tracing on and writing its finished spans to a
file; the spans' parent links join into one trace per tick that runs feed → feature → scoring →
risk → order through all three processes.

The split (ingest: feed, feature | decide: scoring, risk | execution: order) sends the tick's
Bar and Features over core NATS (frames) and its OrderIntent over JetStream: both carry the
context."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from levibot.bus._trace import TRACEPARENTS
from levibot.data import ensure_btcusdt
from levibot.features import SCHEMA
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, wait_until, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BARS = 600
GROUPS = ("ingest", "decide", "execution")


def register_model(root: Path) -> None:
    """An active model on two features: the onnx strategy scores the feature actor's output."""
    used = ("rsi_14", "bb_pctb")
    mid = f"tr-{uuid.uuid4().hex[:6]}"
    make_model(
        root / "incoming" / mid, model_id=mid, schema_hash=SCHEMA.hash,
        schema_size=len(SCHEMA.names), columns=tuple(SCHEMA.index(n) for n in used),
        names=used, sign=1.0, trees=5, rows=500,
    )  # fmt: skip
    registry = ModelRegistry(root)
    registry.register(root / "incoming" / mid)
    registry.activate(mid)


def make_config(tmp: Path, ns: str) -> Path:
    register_model(tmp / "data" / "models")
    return write_config(
        tmp / "split.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "replay": True, "drain_timeout_s": 30.0},
            "storage": {"data_dir": str(tmp / "data")},
            "nats": {
                "url": NATS_URL,
                "namespace": ns,
                "stream": ns.upper(),
                "settle_nodes": 3,
            },
            "tracing": {"enabled": True, "exporter": "file", "path": str(tmp / "unset")},
            "groups": {
                "ingest": ["feed", "feature"],
                "decide": ["scoring", "risk"],
                "execution": ["order", "order_log"],
            },
            "feed": {},
            "feed.replay": {"path": str(ensure_btcusdt()), "limit": BARS},
            "scoring": {"strategies": ["onnx"]},
            "risk": {
                "preset": "normal",
                "sizing": "all_in",
                "persist": False,
                # Decide on the Signal itself: the OrderIntent is then the child of the signal's
                # handling (after the portfolio, it would be the child of the snapshot's, which
                # the order actor sends on the bar: the same trace, another branch).
                "decide_after_portfolio": False,
            },
            "order": {"fill": "next_open", "persist": False},
            "order_log": {"path": str(tmp / "orders")},
        },
    )


def start(cfg: Path, tmp: Path, group: str, **env: str) -> NodeProcess:
    # Each process writes its own span file (the environment overrides [tracing] path).
    env = {"LEVIBOT__TRACING__PATH": str(tmp / f"{group}.spans"), **env}
    return NodeProcess(cfg, "--groups", group, log=tmp / f"{group}.log", env=env)


class Listener:
    """Records the headers of every NATS message on ``subject``, from a thread of its own."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.headers: list[dict[str, str]] = []
        self._nc: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._subscribe(), self._loop).result(10)

    async def _subscribe(self) -> None:
        async def cb(raw: Any) -> None:
            self.headers.append(dict(raw.headers or {}))

        self._nc = await nats.connect(NATS_URL)
        await self._nc.subscribe(self.subject, cb=cb)
        await self._nc.flush()

    def stop(self) -> None:
        if self._nc is not None:
            asyncio.run_coroutine_threadsafe(self._nc.drain(), self._loop).result(10)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


def start_downstream(cfg: Path, tmp: Path) -> list[NodeProcess]:
    """Start execution, then decide, each ready before the next starts: two nodes creating the
    same JetStream stream at once can race (one is refused: "stream name already in use")."""
    nodes: list[NodeProcess] = []
    try:
        for group in ("execution", "decide"):
            nodes.append(start(cfg, tmp, group))
            nodes[-1].wait_ready()
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes


def spans(tmp: Path) -> list[dict[str, Any]]:
    out = []
    for group in GROUPS:
        for line in (tmp / f"{group}.spans").read_text().splitlines():
            record = json.loads(line)
            record["group"] = group
            out.append(record)
    return out


def test_one_tick_is_one_trace_across_three_processes(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, f"tr{uuid.uuid4().hex[:8]}")
    downstream = start_downstream(cfg, tmp_path)
    try:
        ingest = start(cfg, tmp_path, "ingest", LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE="true")
        assert ingest.wait(300) == 0, ingest.tail()
    finally:
        for node in downstream:
            node.signal(signal.SIGTERM)
        for node in downstream:
            assert node.wait(60) == 0, node.tail()
    orders = (tmp_path / "orders").read_text().splitlines()
    assert orders, "the strategy should trade on 600 real bars"

    found = spans(tmp_path)
    by_id = {s["span_id"]: s for s in found}
    assert len(by_id) == len(found), "span ids are unique"
    # Every parent link joins: the parent is a span some process exported, in the same trace.
    orphans = [s for s in found if s["parent_id"] and s["parent_id"] not in by_id]
    assert orphans == []
    for s in found:
        if s["parent_id"]:
            assert by_id[s["parent_id"]]["trace_id"] == s["trace_id"]

    # Each order the order actor handled: its chain of parents up to the root.
    order_spans = [s for s in found if s["name"] == "order handle OrderIntent"]
    assert order_spans
    chains = []
    for leaf in order_spans:
        chain = [leaf]
        while chain[-1]["parent_id"]:
            chain.append(by_id[chain[-1]["parent_id"]])
        chains.append(chain[::-1])  # root first
    full = [
        c
        for c in chains
        if [s["attributes"]["levibot.actor"] for s in c][:5]
        == ["feed", "feature", "scoring", "risk", "order"]
    ]
    assert full, [[s["name"] for s in c] for c in chains][:5]
    chain = full[0]
    assert chain[0]["parent_id"] is None and chain[0]["kind"] == "PRODUCER"
    assert chain[0]["name"].startswith("feed publish")
    assert [s["group"] for s in chain[:5]] == ["ingest", "ingest", "decide", "decide", "execution"]
    # Every order's trace (whichever branch made it) spans the three processes.
    groups_of: dict[str, set[str]] = {}
    for s in found:
        groups_of.setdefault(s["trace_id"], set()).add(s["group"])
    assert all(groups_of[leaf["trace_id"]] == set(GROUPS) for leaf in order_spans)
    # Three processes, each its own service instance, one trace id.
    assert len({s["resource"]["service.instance.id"] for s in chain}) == 3
    assert len({s["trace_id"] for s in chain}) == 1
    # Every tick traced: one root per published bar at least, each with its own trace.
    roots = [s for s in found if s["parent_id"] is None and s["name"].startswith("feed publish")]
    assert len({s["trace_id"] for s in roots}) == len(roots) >= BARS


def test_frames_of_many_ticks_keep_each_tick_in_its_own_trace(tmp_path: Path) -> None:
    """Live and unpaced, core egress packs many numbers into each frame: each still arrives
    under its own publisher's context (``levibot-traceparents``), three processes deep."""
    count = 3000  # of one symbol: one subject, so runs of many numbers per frame
    ns = f"tf{uuid.uuid4().hex[:8]}"
    cfg = write_config(
        tmp_path / "chain.toml",
        {
            "node": {"plugins": ["tests.pipeline"], "drain_timeout_s": 10.0},
            "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper()},
            "tracing": {"enabled": True, "exporter": "file", "path": "", "max_queue": 65536},
            "groups": {"ingest": ["counter"], "decide": ["square"], "execution": ["sink"]},
            "counter": {"count": count, "symbols": ["AAA"]},
            "sink": {"path": str(tmp_path / "sink.out")},
        },
    )
    downstream = start_downstream(cfg, tmp_path)
    wire = Listener(f"{ns}.>")
    try:
        wire.start()
        source = start(cfg, tmp_path, "ingest", LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE="true")
        assert source.wait(120) == 0, source.tail()
        wait_until(lambda: len((tmp_path / "sink.out").read_text().splitlines()) >= count * 0.9)
    finally:
        wire.stop()
        for node in downstream:
            node.signal(signal.SIGTERM)
        for node in downstream:
            assert node.wait(60) == 0, node.tail()
    # Frames of several numbers went out, each number's context in the list header.
    lists = [h[TRACEPARENTS].split(",") for h in wire.headers if TRACEPARENTS in h]
    assert max(map(len, lists), default=0) > 1, wire.headers[:3]

    found = spans(tmp_path)
    by_id = {s["span_id"]: s for s in found}
    sinks = [s for s in found if s["name"] == "sink handle Squared"]
    assert len(sinks) >= count * 0.9  # core NATS is at most once; nothing is lost here
    traces = set()
    orphans = [s for s in found if s["parent_id"] and s["parent_id"] not in by_id]
    assert orphans == []
    for leaf in sinks:
        square = by_id[leaf["parent_id"]]
        assert square["parent_id"], square  # its context came through the frame
        root = by_id[square["parent_id"]]
        assert (square["name"], square["group"]) == ("square handle Num", "decide")
        assert (root["name"], root["group"], root["parent_id"]) == (
            "counter publish Num", "ingest", None,
        )  # fmt: skip
        assert leaf["trace_id"] == square["trace_id"] == root["trace_id"]
        # The same number all the way: the context was not shifted to a neighbour in the frame.
        assert leaf["attributes"]["levibot.ts_event"] == root["attributes"]["levibot.ts_event"]
        traces.add(leaf["trace_id"])
    assert len(traces) == len(sinks)  # one trace per number, none merged

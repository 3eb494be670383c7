"""The monitored system the monitoring tests look at: real ``levibot run`` processes.

The pipeline split into its groups over the real NATS server (in a namespace of its own):
ingest replays the real BTCUSDT 1h bars on the live clock, scoring serves an ONNX model with a
shadow beside the EMA crossover, execution runs risk and order, and an edge node runs the store
and the gateway (with Redis). Risk is ``tests.dlq_actors``' ``poison_risk``: the real risk actor,
which raises on a manual order for ``POISONUSDT`` only, so a real handler failure can put a
message in the dead-letter stream. A fifth node runs a Binance feed whose exchange cannot be
reached: the feed-health metrics of a live websocket source exist, and it is a real fault.
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from levibot.data import ensure_btcusdt
from levibot.features import SCHEMA
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model
from levibot.testenv import NATS_URL, REDIS_URL
from levibot.testing import NodeProcess, free_port, write_config

GROUPS = ("ingest", "scoring", "execution", "edge", "exchange")


def models(root: Path) -> tuple[str, str]:
    """Register an active model and a shadow (opposite sign: they disagree) in ``root``."""
    registry = ModelRegistry(root)
    used = ("rsi_14", "bb_pctb")
    ids = []
    for i, sign in enumerate((1.0, -1.0)):
        mid = f"mon{i}-{uuid.uuid4().hex[:6]}"
        make_model(
            root / "incoming" / mid, model_id=mid, schema_hash=SCHEMA.hash,
            schema_size=len(SCHEMA.names), columns=tuple(SCHEMA.index(n) for n in used),
            names=used, sign=sign, trees=5, rows=500,
        )  # fmt: skip
        registry.register(root / "incoming" / mid)
        ids.append(mid)
    registry.activate(ids[0])
    return ids[0], ids[1]


class Cluster:
    """The five nodes; ``start`` them, ``scrape`` them, ``kill`` one, ``stop`` them all."""

    def __init__(self, tmp: Path, *, bars: int = 3000, bars_per_s: float = 25.0) -> None:
        self.tmp = tmp
        self.ns = f"mon{uuid.uuid4().hex[:10]}"
        self.gateway_port = free_port()
        _, shadow = models(tmp / "data" / "models")
        self.config = write_config(
            tmp / "cluster.toml",
            {
                "node": {"name": "levibot", "drain_timeout_s": 10.0,
                         "plugins": ["tests.dlq_actors"]},
                "storage": {"data_dir": str(tmp / "data")},
                "nats": {"url": NATS_URL, "namespace": self.ns, "stream": self.ns.upper(),
                         "max_deliver": 3, "redeliver_delay_s": 0.05},
                "groups": {"ingest": ["feed", "feature"], "scoring": ["scoring"],
                           "execution": ["poison_risk", "order"], "edge": ["store", "gateway"]},
                "feed": {},
                "feed.replay": {"path": str(ensure_btcusdt()), "limit": bars,
                                "speed": 3600.0 * bars_per_s},
                "scoring": {"strategies": ["onnx", "ema_cross"], "shadow_model_id": shadow,
                            "live_window": 10},
                "poison_risk": {"preset": "normal", "persist": False},
                "order": {"fill": "close", "persist": False},
                "gateway": {"port": self.gateway_port, "jwt_secret": "monitoring-test-secret",
                            "redis_url": REDIS_URL, "redis_prefix": self.ns},
            },
        )  # fmt: skip
        # No NATS: the exchange's feed stands alone; its websocket's port refuses connections.
        self.exchange_config = write_config(
            tmp / "exchange.toml",
            {
                "node": {"name": "levibot-exchange", "groups": ["exchange"]},
                "storage": {"data_dir": str(tmp / "exchange")},
                "groups": {"exchange": ["feed"]},
                "feed": {"source": "binance", "symbols": ["BTCUSDT"]},
                "feed.binance": {"url": f"ws://127.0.0.1:{free_port()}/stream",
                                 "backoff_initial_s": 0.2, "backoff_max_s": 1.0},
            },
        )  # fmt: skip
        self.nodes: dict[str, NodeProcess] = {}

    def start(self, group: str) -> NodeProcess:
        """Start ``group``'s node and wait until it is ready."""
        config = self.exchange_config if group == "exchange" else self.config
        node = NodeProcess(config, "--groups", group, log=self.tmp / f"{group}.log")
        self.nodes[group] = node
        node.wait_ready(90)
        return node

    def start_all(self) -> None:
        """Start every node, downstream first (ingest last: nothing is published unheard)."""
        for group in ("edge", "execution", "scoring", "exchange", "ingest"):
            self.start(group)

    def scrape(self, group: str) -> str:
        """Return ``group``'s /metrics text."""
        url = f"http://127.0.0.1:{self.nodes[group].port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def get(self, path: str) -> int:
        """GET ``path`` from the gateway; return the status."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.gateway_port}{path}") as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def kill(self, group: str) -> None:
        """kill -9 ``group``'s node (a crashed pod)."""
        self.nodes[group].kill()

    def stop(self) -> None:
        """SIGTERM every node still running, then wait for it (they are ours: by PID)."""
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.signal(signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.wait(30)
            except Exception:
                node.kill()

"""The shipped monitoring against the real thing: ``levibot run`` processes (the pipeline split
into its groups over the real NATS, replaying the real BTCUSDT bars) and a real Prometheus
scraping them with the shipped configuration and rules.

- Every metric name every dashboard query and every rule reads is on a live node's /metrics.
- Prometheus scrapes every node and the SLO recording rules produce their series.
- Alerts fire for real faults: an expired model, an exchange that cannot be reached, a manual
  order whose handler raises on every delivery (dead-lettered), the kill switch turned on by a
  command over NATS, and the execution group killed with SIGKILL (node down, and the
  availability SLO's fast burn). Only the alerts' ``for`` is shortened; every
  expression is the shipped one (tests/monitoring/prometheus.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from levibot.bus import publish_once
from levibot.messages import SetKillSwitch, SubmitOrder
from levibot.settings import load_settings
from levibot.testing import wait_until
from tests.dlq_actors import POISON
from tests.monitoring.cluster import GROUPS, Cluster
from tests.monitoring.prometheus import Prometheus
from tests.monitoring.queries import exported_names_needed, sample_names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).parents[1] / "artifacts"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Prometheus]]:
    tmp = tmp_path_factory.mktemp("monitoring")
    cluster = Cluster(tmp, bars=6000, bars_per_s=25.0)
    prometheus: Prometheus | None = None
    try:
        cluster.start_all()
        targets = {g: n.port for g, n in cluster.nodes.items()}
        prometheus = Prometheus(tmp / "prometheus", targets)
        prometheus.start()
        yield cluster, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()


def live_names(cluster: Cluster) -> set[str]:
    names: set[str] = set()
    for group in GROUPS:
        names |= sample_names(cluster.scrape(group))
    return names


def test_every_metric_the_dashboards_and_rules_read_is_exported(
    system: tuple[Cluster, Prometheus],
) -> None:
    cluster, _ = system
    # Gateway traffic of each kind: answered, unknown route, refused without credentials.
    assert cluster.get("/health") == 200
    assert cluster.get("/no-such-route") == 404
    assert cluster.get("/portfolio/summary") == 401
    needed = exported_names_needed()
    assert len(needed) > 70
    # Some series appear with the first event of their kind (a denial, matured live scores).
    wait_until(lambda: not set(needed) - live_names(cluster), 120, "every metric name")
    missing = {name: users for name, users in needed.items() if name not in live_names(cluster)}
    assert missing == {}


def test_prometheus_scrapes_every_node_and_records_the_slis(
    system: tuple[Cluster, Prometheus],
) -> None:
    _, prometheus = system
    wait_until(lambda: set(prometheus.targets_up().values()) == {"up"}, 30, "targets up")
    assert sorted(prometheus.targets_up()) == sorted(GROUPS)

    def value(expr: str) -> float | None:
        result = prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None

    wait_until(lambda: value("levibot:available") == 1.0, 30, "levibot:available")
    wait_until(lambda: value('levibot:actor_latency_seconds:p95_rate5m{actor="order"}'), 60, "p95")
    p95 = value('levibot:actor_latency_seconds:p95_rate5m{actor="order"}')
    assert p95 is not None and 0 < p95 < 1.0
    ratio = value("levibot:order_latency_slow:ratio_rate5m")
    assert ratio is not None and 0 <= ratio <= 1
    errors = value("levibot:errors:ratio_rate5m")
    assert errors is not None and 0 <= errors < 0.5
    assert value("levibot:unavailable:ratio_rate5m") == 0.0
    # The replay feed plays on (fresh); the Binance feed has never had a message (stale).
    ages = {
        r["metric"]["source"]: float(r["value"][1])
        for r in prometheus.query("levibot_feed_last_message_age_seconds")
    }
    assert ages["replay"] < 5.0 < ages["binance"]


def firing(prometheus: Prometheus, name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a for a in prometheus.firing()
        if a["labels"]["alertname"] == name
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]  # fmt: skip


def test_alerts_fire_for_real_faults(system: tuple[Cluster, Prometheus]) -> None:
    cluster, prometheus = system
    shown: list[dict[str, str]] = []

    def expect(fault: str, name: str, timeout: float = 60, **labels: str) -> None:
        alerts = wait_until(lambda: firing(prometheus, name, **labels), timeout, name)
        shown.append({"alert": name, "fault": fault, "labels": json.dumps(alerts[0]["labels"])})

    # Faults present from the start: the model was trained in 2023 (past the 30-day limit)
    # and the Binance feed's exchange refuses every connection.
    expect("the active model is older than [scoring] max_model_age_s", "LevibotModelExpired",
           group="scoring")  # fmt: skip
    expect("the Binance websocket's port refuses connections", "LevibotFeedDisconnected",
           group="exchange", source="binance")  # fmt: skip
    assert not firing(prometheus, "LevibotNodeDown")
    assert not firing(prometheus, "LevibotKillSwitchOn")

    # A manual order whose handler raises every time: tried max_deliver times, dead-lettered.
    nats = load_settings(cluster.config, environ={}).nats
    poison = SubmitOrder(
        ts_event=0, ts_init=0, command_id=uuid.uuid4().hex, issued_by="monitoring-test",
        symbol=POISON, side="buy", quantity=1.0,
    )  # fmt: skip
    assert not firing(prometheus, "LevibotDeadLetters")
    anyio.run(publish_once, nats, poison)
    expect("a SubmitOrder whose risk handler raised on all 3 deliveries", "LevibotDeadLetters")

    # The kill switch, turned on by a command over NATS as the gateway or the bot would.
    command = SetKillSwitch(
        ts_event=0, ts_init=0, command_id=uuid.uuid4().hex, on=True, issued_by="monitoring-test"
    )
    anyio.run(publish_once, nats, command)
    expect("SetKillSwitch(on=True) published on NATS", "LevibotKillSwitchOn")

    # The execution group dies (SIGKILL): its node is down and availability burns its budget.
    cluster.kill("execution")
    expect("execution's process killed with SIGKILL", "LevibotNodeDown", group="execution")
    expect("execution's process killed with SIGKILL", "LevibotAvailabilityBudgetBurn",
           window="1h")  # fmt: skip
    assert [a["labels"]["group"] for a in prometheus.firing()
            if a["labels"]["alertname"] == "LevibotNodeDown"] == ["execution"]  # fmt: skip

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "monitoring-alerts.json").write_text(json.dumps(shown, indent=2) + "\n")
    for row in shown:
        print(f"{row['alert']:32} {row['fault']}")

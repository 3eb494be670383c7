"""The shipped Grafana dashboards and their provisioning: well-formed JSON Grafana loads, every
query valid PromQL (promtool parses each one), and each dashboard shows what issue 15 asks of
it. That every metric name exists on a live node is tests/monitoring/test_monitoring_live.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.queries import (
    MONITORING,
    dashboard_queries,
    dashboards,
    metric_names,
    promql,
    recorded,
)
from tests.monitoring.test_rules import promtool

PROVISIONING = MONITORING / "grafana" / "provisioning"

#: What each dashboard must show (issue 15), as the metrics its queries read.
REQUIRED = {
    "pipeline.json": {
        "levibot_actor_latency_seconds_bucket", "levibot:actor_latency_seconds:p95_rate5m",
        "levibot_actor_handled_total", "levibot_mailbox_depth", "levibot_mailbox_dropped",
        "levibot_nats_published_total", "levibot_nats_egress_queue",
        "levibot_nats_consumer_pending", "levibot_nats_dead_letters", "levibot_node_ready",
    },
    "trading.json": {
        "levibot_portfolio_equity", "levibot_risk_drawdown", "levibot_risk_drawdown_limit",
        "levibot_portfolio_open_positions", "levibot_portfolio_exposure",
        "levibot_risk_denied_total", "levibot_order_fills_total", "levibot_risk_kill_switch",
    },
    "ml.json": {
        "levibot_actor_handle_seconds_bucket", "scoring_batch_rows_bucket", "scoring_provider",
        "scoring_shadow_agreement", "scoring_shadow_drift", "scoring_input_drift_fraction",
        "scoring_live_auc", "scoring_live_log_loss", "scoring_live_hit_rate",
        "scoring_model_age_seconds",
    },
    "feed.json": {
        "levibot_feed_sequence_gaps_total", "levibot_feed_reconnects_total",
        "levibot_feed_last_message_age_seconds", "levibot_feed_connected",
    },
    "gateway.json": {
        "gateway_requests_total", "gateway_rate_limited_total", "gateway_ws_clients",
        "gateway_ws_dropped_total", "gateway_request_seconds_bucket",
    },
}  # fmt: skip


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_the_five_dashboards_exist_with_unique_uids() -> None:
    boards = dashboards()
    assert sorted(boards) == sorted(REQUIRED)
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == 5
    assert all(uid.startswith("levibot-") for uid in uids)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_dashboard_is_well_formed(name: str) -> None:
    board = dashboards()[name]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()
    # No two panels overlap.
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_dashboard_shows_what_the_issue_asks(name: str) -> None:
    read = set()
    for query in dashboard_queries():
        if query.where.startswith(name):
            read |= metric_names(query.expr)
    assert REQUIRED[name] - read == set()


def test_the_recorded_series_the_dashboards_read_are_recorded_by_the_rules() -> None:
    used = {n for q in dashboard_queries() for n in metric_names(q.expr) if ":" in n}
    assert used, "the pipeline dashboard reads the SLO recordings"
    assert used - recorded() == set()


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) > 100
    rules = [
        {"record": f"dashboard:query_{i}", "expr": promql(q.expr)} for i, q in enumerate(queries)
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(queries)} rules found" in out.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    # The check above can fail: an unbalanced query is refused.
    path = tmp_path / "bad.yml"
    bad = {"record": "dashboard:bad", "expr": promql("sum(rate(x[$__rate_interval])")}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [bad]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_metric_names_finds_the_metrics_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (actor, le) (rate(levibot_actor_latency_seconds_bucket"
        '{job="levibot",group=~"$group",actor!="x:y"}[$__rate_interval]))) > on (job) group_left'
        " (instance) levibot:available offset 5m or vector(1e-3) * up unless bool x_total"
    )
    assert metric_names(expr) == {
        "levibot_actor_latency_seconds_bucket", "levibot:available", "up", "x_total",
    }  # fmt: skip
    assert metric_names("sum without (a, b) (y)") == {"y"}


def test_provisioning_loads_the_dashboards_from_one_folder_and_names_the_datasource() -> None:
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "levibot.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file" and provider["options"]["path"]
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "levibot.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    for board in dashboards().values():
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
        assert var["current"]["value"] == source["uid"]

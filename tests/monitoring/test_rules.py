"""The shipped Prometheus rules and configuration: ``promtool check`` accepts them, and the
``promtool test rules`` unit tests in deploy/monitoring/prometheus/tests pass, cover every alert
and fail when a rule is broken."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.queries import MONITORING, RULE_TESTS, RULES, rule_groups, rules


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's ``prometheus`` package; scripts/setup-test-env.sh installs it)."""
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install prometheus (make setup does, as root)"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


RULE_FILES = sorted(RULES.glob("*.yml"))
TEST_FILES = sorted(RULE_TESTS.glob("*.test.yml"))


def test_there_are_rules_and_rule_tests() -> None:
    assert [p.name for p in RULE_FILES] == ["levibot-ops.yml", "levibot-slo.yml"]
    assert [p.name for p in TEST_FILES] == ["levibot-ops.test.yml", "levibot-slo.test.yml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_checks_the_rules(path: Path) -> None:
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_checks_the_file_discovery_config_with_its_rules() -> None:
    out = promtool("check", "config", "prometheus.yml", cwd=MONITORING / "prometheus")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 2 rule files found" in out.stdout


def test_the_kubernetes_config_scrapes_annotated_levibot_pods_with_their_group() -> None:
    # Debian's promtool has no Kubernetes discovery, so this one is checked by reading it.
    config = yaml.safe_load((MONITORING / "prometheus" / "kubernetes.yml").read_text())
    local = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == local["rule_files"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == local["scrape_configs"][0]["job_name"] == "levibot"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["levibot"]}}]
    targets = {r.get("target_label"): r for r in job["relabel_configs"]}
    component = "__meta_kubernetes_pod_label_app_kubernetes_io_component"
    assert targets["group"]["source_labels"] == [component]
    assert targets["__address__"]["replacement"] == "$1:$2"


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    out = promtool("test", "rules", path.name, cwd=RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def fired_in_tests() -> set[str]:
    fired = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    return fired


def test_every_alert_is_shown_firing_by_a_unit_test() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert len(alerts) == 17
    assert alerts - fired_in_tests() == set()


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "ticket", "warning", "info"}, rule
            assert {"summary", "description"} <= set(rule["annotations"]), rule


def test_the_slo_alerts_are_multi_window_burn_rates() -> None:
    slo = [r for g in rule_groups(RULES / "levibot-slo.yml") for r in g["rules"] if "alert" in r]
    windows: dict[str, list[str]] = {}
    for rule in slo:
        windows.setdefault(rule["labels"]["slo"], []).append(rule["labels"]["window"])
        long_, short = (line.split(" > ")[0] for line in rule["expr"].split("\nand\n"))
        assert long_.rsplit("ratio_rate", 1)[1] == rule["labels"]["window"]
        assert short.rsplit("ratio_rate", 1)[1] != rule["labels"]["window"]
    assert windows == {s: ["1h", "6h", "1d", "3d"] for s in ("latency", "availability", "errors")}


def broken_copy(tmp: Path, alter: Any) -> Path:
    """Copy the rules and their tests to ``tmp``, with ``alter`` applied to the ops rules."""
    shutil.copytree(MONITORING / "prometheus", tmp / "prometheus")
    ops = tmp / "prometheus" / "rules" / "levibot-ops.yml"
    ops.write_text(alter(ops.read_text()))
    return tmp / "prometheus" / "tests"


STALE = 'levibot_feed_last_message_age_seconds{job="levibot"} > '
BREAKS = {
    "stale-threshold": (STALE + "120", STALE + "1200", "LevibotFeedStale"),
    "drawdown-fraction": ("0.8 * levibot_risk", "0.9 * levibot_risk", "LevibotDrawdownNearLimit"),
    "node-down-for": ("== 0\n        for: 1m", "== 0\n        for: 5m", "LevibotNodeDown"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_broken_rule_fails_its_unit_test(tmp_path: Path, name: str) -> None:
    good, bad, alert = BREAKS[name]
    tests = broken_copy(tmp_path, lambda text: text.replace(good, bad, 1))
    assert (tests.parent / "rules" / "levibot-ops.yml").read_text() != (
        RULES / "levibot-ops.yml"
    ).read_text(), "the alteration must change the rules"
    out = promtool("test", "rules", "levibot-ops.test.yml", cwd=tests)
    assert out.returncode != 0
    assert f"alertname: {alert}" in out.stdout + out.stderr

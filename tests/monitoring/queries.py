"""What the shipped monitoring asks for: every PromQL expression of the Grafana dashboards and the
Prometheus rules, and the metric names each one reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).parents[2] / "deploy" / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
RULES = MONITORING / "prometheus" / "rules"
RULE_TESTS = MONITORING / "prometheus" / "tests"

#: Grafana's variables, replaced by what they stand for in a query Prometheus can run.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$group": ".*",
}
#: Series Prometheus itself makes for every target.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "bool", "offset", "inf", "nan", "atan2"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*")


@dataclass(frozen=True)
class Query:
    """One expression and where it is used."""

    where: str
    expr: str


def promql(expr: str) -> str:
    """Return ``expr`` with Grafana's variables replaced: a query Prometheus accepts."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Return the metric names ``expr`` reads (not functions, keywords, labels or numbers)."""
    text = _STRING.sub('""', promql(expr))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (strings are gone: no braces left)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # label lists of by (...), on (...), group_left (...)
    names = set()
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token[0].isdigit() or token.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end() :]):
            continue  # a function or an aggregation
        names.add(token)
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboards() -> dict[str, dict[str, Any]]:
    """Return every dashboard JSON by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def dashboard_queries() -> list[Query]:
    """Return every query of every dashboard: panel targets and templating variables."""
    out = []
    for name, board in dashboards().items():
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                out.append(Query(f"{name}: {panel['title']} ({target['refId']})", target["expr"]))
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
                out.append(
                    Query(f"{name}: variable {var['name']}", inner.group(1) if inner else query)
                )
    return out


def rule_groups(path: Path) -> list[dict[str, Any]]:
    """Return the rule groups of a rule file."""
    return list(yaml.safe_load(path.read_text())["groups"])


def rules() -> list[dict[str, Any]]:
    """Return every rule of every shipped rule file."""
    return [
        rule
        for path in sorted(RULES.glob("*.yml"))
        for g in rule_groups(path)
        for rule in g["rules"]
    ]


def rule_queries() -> list[Query]:
    """Return every rule's expression, named by its alert or recorded series."""
    return [Query(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]


def recorded() -> set[str]:
    """Return the names the recording rules define."""
    return {rule["record"] for rule in rules() if "record" in rule}


def exported_names_needed() -> dict[str, list[str]]:
    """Return each metric name the dashboards and rules read from the nodes, with its users."""
    needed: dict[str, list[str]] = {}
    defined = recorded() | SYNTHETIC
    for query in dashboard_queries() + rule_queries():
        for name in metric_names(query.expr) - defined:
            needed.setdefault(name, []).append(query.where)
    return needed


def sample_names(exposition: str) -> set[str]:
    """Return the sample names of a /metrics text (``x_bucket``, ``x_count`` and ``x_sum`` too)."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }

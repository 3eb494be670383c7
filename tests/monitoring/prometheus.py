"""A real Prometheus (Debian's ``/usr/bin/prometheus``) for the monitoring tests: on a free port,
with its storage in a temporary directory, scraping given nodes every second and evaluating the
shipped rules; started and stopped by its PID.

The rules it loads are the shipped files with one change: each alert's ``for`` is shortened
(``for_s``), so a fault shows within seconds. Every ``expr`` stays byte for byte the shipped one
(``ShortRules`` checks that), and so do the recording rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from levibot.testing import free_port, wait_until
from tests.monitoring.queries import MONITORING, RULES


def short_rules(out: Path, for_s: float) -> list[Path]:
    """Write the shipped rule files to ``out`` with every alert's ``for`` set to ``for_s``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted(RULES.glob("*.yml")):
        shipped = yaml.safe_load(path.read_text())
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = f"{for_s:g}s"
        exprs = [r["expr"] for g in doc["groups"] for r in g["rules"]]
        assert exprs == [r["expr"] for g in shipped["groups"] for r in g["rules"]]
        target = out / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(target)
    return paths


class Prometheus:
    """``prometheus`` scraping ``targets`` ({group: port}) as the shipped config's job does."""

    def __init__(self, tmp: Path, targets: dict[str, int], *, for_s: float = 2.0) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: apt-get install prometheus (make setup does)"
        self.binary = binary
        self.dir = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = short_rules(tmp / "rules", for_s)
        (tmp / "targets").mkdir(exist_ok=True)
        (tmp / "targets" / "levibot.json").write_text(
            json.dumps(
                [
                    {"targets": [f"127.0.0.1:{p}"], "labels": {"group": g}}
                    for g, p in targets.items()
                ]
            )
        )
        # The shipped configuration; only the intervals and the rule files' place differ.
        config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
        config["global"] = {
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": "1s",
        }
        config["rule_files"] = [str(p) for p in rules]
        config["scrape_configs"][0]["file_sd_configs"] = [
            {"files": [str(tmp / "targets" / "*.json")]}
        ]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "prometheus.log"

    def start(self) -> None:
        """Start it and wait until it is ready."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(ready, 30, "prometheus ready")

    def stop(self) -> None:
        """SIGTERM our Prometheus (by its PID) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the instant vector of ``expr``."""
        return list(self.api("query", query=expr)["result"])

    def firing(self) -> list[dict[str, Any]]:
        """Return the alerts firing now."""
        return [a for a in self.api("alerts")["alerts"] if a["state"] == "firing"]

    def targets_up(self) -> dict[str, str]:
        """Return each target's group and its health."""
        return {t["labels"]["group"]: t["health"] for t in self.api("targets")["activeTargets"]}

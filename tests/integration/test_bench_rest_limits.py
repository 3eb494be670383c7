"""Smoke test of ``bench/bench_rest_limits.py``: the shortest run works and its figures mean
what they say.

It runs the real benchmark (two gateways, the real Redis, wrk when installed) for one round of
a second per case. Timings are never asserted (they belong to ``bench/``); what is asserted is
what the ratios rest on: under the limits no answer is refused, at the limits every one is
(shared through Redis as in memory), and the report names its load generator and ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_rest_limits_bench_admits_under_the_limits_and_refuses_at_them(tmp_path: Path) -> None:
    out = tmp_path / "rest_limits.json"
    proc = subprocess.run(
        [sys.executable, "bench/bench_rest_limits.py", "--rounds", "1", "--seconds", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["load"].startswith(("wrk -t1", "bench/gateway_load.py"))
    results = doc["results"]
    for case in ("under", "at", "many"):
        for side in ("memory", "redis"):
            r = results[case][side]
            assert r["requests"] > 0 and r["rps"] > 0, (case, side)
            assert r["socket_errors"] == 0, (case, side)
            # Under the limits nothing is refused; at them everything is, Redis or memory,
            # but for the key's 600 of a new window if a 60 s window turned during the run.
            if case == "at":
                assert r["requests"] - 600 <= r["non_2xx"] <= r["requests"], (case, side, r)
            else:
                assert r["non_2xx"] == 0, (case, side, r)
        assert results[case]["ratio_vs_memory"] > 0
    assert [r["name"] for r in doc["ratios"]] == [
        "REST rps, limits in Redis ÷ memory (under the limits)",
        "REST rps, limits in Redis ÷ memory (at the limits, 429s)",
        "REST rps, limits in Redis ÷ memory (1,000 keys)",
    ]
    for side in ("memory", "redis"):
        assert results["limiter"]["under"][f"{side}_cpu_us_per_hit"] > 0

"""Smoke test of ``levibot bench``: the quickest run works end to end and writes its results.

It runs the real benchmark (``levibot bench --quick``, a child process that starts node
processes over the local NATS server) with a small cached model, and checks the shape of
``pipeline.json`` and that the plots exist. It never asserts timings: those belong to
``bench/``, not to tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from levibot.commands.bench import checkout_root
from levibot.errors import LevibotError

STAGES = ("feature", "scoring", "risk", "order", "e2e")
PERCENTILES = ("n", "p50_us", "p99_us", "p999_us", "max_us")


@pytest.mark.integration
def test_levibot_bench_quick_writes_latency_and_throughput_per_configuration(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "levibot", "bench", "--quick", "--configs", "inproc", "procs",
         "--trees", "20", "--out", str(out)],
        cwd=checkout_root(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| config | stage |" in proc.stdout  # the terminal table

    doc = json.loads((out / "pipeline.json").read_text())
    assert {"results", "cpu", "errors", "machine", "cpus", "args", "model_id"} <= doc.keys()
    assert doc["errors"] == {}
    for config in ("inproc", "procs"):
        assert {"engine_us_per_bar", "bare_us_per_bar", "ratio", "rate"} <= doc["cpu"][
            config
        ].keys()
    # procs also ran its transport floors: the same traffic, no engine, over raw nats-py and
    # over the link.
    assert set(doc["results"]) == {"inproc/bare", "inproc/engine", "procs/bare", "procs/engine",
                                   "procs/floor", "procs/floor-link"}  # fmt: skip
    for key, result in doc["results"].items():
        assert {"steps", "latency", "latency_rate", "sustained_per_s"} <= result.keys(), key
        assert set(result["latency"]) == set(STAGES), key
        for stage in STAGES:
            assert set(PERCENTILES) <= result["latency"][stage].keys(), (key, stage)
        assert [s["rate"] for s in result["steps"]] == doc["args"]["rates"], key
        # every bar of the first step reached scoring and produced an order decision or fill
        first = result["steps"][0]
        assert first["bars"] > 0 and first["stages"]["scoring"]["n"] > 0, key
        assert first["e2e"]["n"] > 0, key
    # The ratios, from this same run: split vs single, the raw-NATS hop, idle modes.
    names = {r["name"] for r in doc["ratios"]}
    assert {"split CPU/bar ÷ single", "split sustained ÷ single", "split e2e p99 ÷ single",
            "split e2e p50 ÷ (single p50 + 2 raw hops)", "hop p50 ÷ raw nats-py",
            "hop msgs/s ÷ raw nats-py", "idle=spin e2e p50 µs (1 symbol)",
            "floor: (single + raw split traffic) ÷ single CPU/bar",
            "floor on the link: (single + raw split traffic) ÷ single CPU/bar",
            "REST rps, limits in Redis ÷ memory (under the limits)",
            "REST rps, limits in Redis ÷ memory (at the limits, 429s)"} <= names  # fmt: skip
    assert "| ratio (this run) |" in proc.stdout
    assert set(doc["hop"]) == {f"{s}/{m}" for s in ("raw", "levibot")
                               for m in ("latency", "throughput")}  # fmt: skip
    assert all(doc["idle"][m]["e2e"]["n"] > 0 for m in ("bare", "sleep", "spin"))
    assert "idle=spin e2e p50 ÷ bare pipeline's" in names
    for png in ("pipeline_cdf.png", "pipeline_throughput.png"):
        assert (out / png).stat().st_size > 0


def test_levibot_bench_outside_a_checkout_fails_with_a_clear_error(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "levibot"
    package.mkdir(parents=True)
    with pytest.raises(LevibotError, match="source checkout"):
        checkout_root(package)

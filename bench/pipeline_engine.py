"""Run the engine's pipeline for the benchmark: in one process, or as three node processes.

Both return the recorders' rows per stage, the source's step windows and a time series of
the nodes' total mailbox drops (``levibot_mailbox_dropped`` summed over actors).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats as nats_py
import numpy as np
from nats.js.errors import NotFoundError

from bench.pipeline_actors import RECORDERS
from levibot.bus._dlq import dlq_stream
from levibot.runtime.node import Node
from levibot.settings import NatsConfig, load_settings
from levibot.testing import NodeProcess, wait_until, write_config

GROUPS = {
    "ingest": ["pbars", "feature", "prec_feature"],
    "scoring": ["scoring", "prec_scoring"],
    "execution": ["risk", "order", "prec_risk", "prec_order"],
}
Series = list[tuple[int, float]]
#: (records per stage, steps, drops, CPU seconds, error): an in-process run that got stuck
#: returns what it recorded until then, with the error.
Result = tuple[dict[str, np.ndarray], list[dict[str, Any]], Series, Series, str | None]


def _nats(url: str) -> dict[str, Any]:
    if not url:
        return {}
    ns = f"pb{uuid.uuid4().hex[:8]}"
    return {"url": url, "namespace": ns, "stream": ns.upper()}


async def drop_streams(config: NatsConfig) -> None:
    """Delete a run's stream and dead-letter stream: a benchmark leaves nothing behind on a
    shared server (hundreds of runs' file streams slow it down and fill its disk)."""
    if not config.url:
        return

    async def quiet(_exc: Exception) -> None:
        """nats-py's error callback: a failure to connect is reported below, once."""

    try:
        with anyio.fail_after(5):
            nc = await nats_py.connect(config.url, allow_reconnect=False, error_cb=quiet)
    except Exception as exc:  # cleanup after a run that may have failed on this: never mask it
        print(f"could not delete the streams of {config.namespace}: {exc!r}", file=sys.stderr)
        return
    try:
        for name in (config.stream, dlq_stream(config)):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def _empty() -> np.ndarray:
    return np.empty((0, 3), dtype=np.int64)


class BenchTimeout(RuntimeError):
    """A configuration did not finish in time (a stuck node): reported, not waited for."""


def limit_s(sections: dict[str, Any]) -> float:
    """Return how long a run of the source in ``sections`` may take, with a generous margin."""
    p = sections["pbars"]
    warmup = p["symbols"] * p["warmup_bars"] / p["warmup_rate"]
    return float(warmup + p["settle_s"] + len(p["rates"]) * (p["step_s"] + p["pause_s"]) + 60)


async def _inproc(
    sections: dict[str, Any], nats: str, limit_s: float, node_extra: dict[str, Any]
) -> Result:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"plugins": ["bench.pipeline_actors"], "groups": list(GROUPS),
                     "http_port": -1, "stop_when_sources_done": True, **node_extra},
            "groups": GROUPS,
            "nats": _nats(nats),
            "log": {"level": "warning"},
            **sections,
        },
    )  # fmt: skip
    node = Node(settings)
    drops: Series = []
    cpu: Series = []

    async def poll() -> None:
        while True:
            total = sum(d for _, d in node.bus.stats().values())
            now = time.time_ns()
            drops.append((now, float(total)))
            cpu.append((now, time.process_time()))
            await anyio.sleep(0.05)

    stuck: list[str] = []

    async def watchdog() -> None:
        await anyio.sleep(limit_s)
        # Capture before cancelling: cancellation clears the runners' busy flags.
        busy = [r.name for r in node.runners if r.busy]
        mirror = node.mirror
        egress = len(mirror.core.queue) + len(mirror.durable.queue) if mirror else None
        stuck.append(
            f"the node did not finish within {limit_s:.0f} s: mailboxes (depth, dropped) "
            f"{node.bus.stats()}, actors busy in handle {busy}, NATS egress queue {egress}"
        )
        node.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            tg.start_soon(watchdog)
            code = await node.run(handle_signals=False)
            tg.cancel_scope.cancel()
    finally:
        await drop_streams(settings.nats)
    if code != 0 and not stuck:
        raise RuntimeError(f"the benchmark node exited {code}")
    records = {stage: node.actors[cls.name].array() for stage, cls in RECORDERS.items()}  # type: ignore[attr-defined]
    steps = node.actors["pbars"].steps  # type: ignore[attr-defined]
    return records, steps, drops, cpu, stuck[0] if stuck else None


def run_inproc(sections: dict[str, Any], nats: str = "", **node: Any) -> Result:
    """Run every group in this process (with the NATS mirror when ``nats`` is set); ``node``:
    more ``[node]`` settings (``idle="spin"``)."""
    return anyio.run(
        _inproc, sections, nats, limit_s(sections), node, backend_options={"use_uvloop": True}
    )


def _dropped(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    return sum(
        float(x.rsplit(" ", 1)[1])
        for x in text.splitlines()
        if x.startswith("levibot_mailbox_dropped{")
    )


def process_cpu_s(pid: int, last: float) -> float:
    """Return a process's user + system CPU seconds (``last`` once it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return last
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_procs(sections: dict[str, Any], nats: str, scoring_partitions: int = 1) -> Result:
    """Run ingest | scoring | execution as three ``levibot run --groups`` processes; scoring as
    ``scoring_partitions`` replicas that split the symbols (``[node] partition_*``)."""
    tmp = Path(tempfile.mkdtemp(prefix="lbpipe"))
    outs = {stage: tmp / f"{stage}.npy" for stage in RECORDERS}
    parts = [tmp / f"scoring-p{i}.npy" for i in range(scoring_partitions)]
    steps_path = tmp / "steps.json"
    cfg_sections: dict[str, Any] = {
        "node": {"plugins": ["bench.pipeline_actors"], "drain_timeout_s": 10.0},
        "nats": _nats(nats),
        "log": {"level": "warning"},
        "groups": GROUPS,
        **{k: dict(v) for k, v in sections.items()},
    }
    cfg_sections["pbars"]["out"] = str(steps_path)
    for stage, cls in RECORDERS.items():
        cfg_sections[cls.name] = {"out": str(outs[stage])}
    cfg = write_config(tmp / "bench.toml", cfg_sections)
    nodes: dict[str, NodeProcess] = {}
    drops: Series = []
    cpu: Series = []
    stop = threading.Event()
    last_cpu: dict[int, float] = {}

    def scrape() -> None:
        passes = 0
        while not stop.is_set():
            now = time.time_ns()
            # /metrics costs the measured processes CPU (an HTTP request, a render): every
            # 0.3 s is enough to see a step's drops; CPU (from /proc, free) every 0.1 s.
            if passes % 3 == 0:
                values = [_dropped(n.port) for n in list(nodes.values())]
                drops.append((now, float(np.nansum(values))))
            passes += 1
            for n in list(nodes.values()):
                last_cpu[n.proc.pid] = process_cpu_s(n.proc.pid, last_cpu.get(n.proc.pid, 0.0))
            cpu.append((now, sum(last_cpu.values())))
            stop.wait(0.1)

    scraper = threading.Thread(target=scrape, daemon=True)
    try:
        nodes["execution"] = NodeProcess(cfg, "--groups", "execution", log=tmp / "execution.log")
        for i in range(scoring_partitions):
            env = {}
            if scoring_partitions > 1:  # each replica records its own symbols' signals
                recorder = RECORDERS["scoring"].name.upper()
                env = {"LEVIBOT__NODE__PARTITION_INDEX": str(i),
                       "LEVIBOT__NODE__PARTITION_COUNT": str(scoring_partitions),
                       f"LEVIBOT__{recorder}__OUT": str(parts[i])}  # fmt: skip
            name = "scoring" if scoring_partitions == 1 else f"scoring-p{i}"
            nodes[name] = NodeProcess(cfg, "--groups", "scoring", log=tmp / f"{name}.log", env=env)
        for node in nodes.values():
            node.wait_ready(60)
        nodes["ingest"] = NodeProcess(
            cfg, "--groups", "ingest", log=tmp / "ingest.log",
            env={"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"},
        )  # fmt: skip
        scraper.start()
        try:
            code = nodes["ingest"].proc.wait(limit_s(sections) + 30)
        except subprocess.TimeoutExpired:
            raise BenchTimeout(f"the ingest node did not finish; logs in {tmp}") from None
        if code != 0:
            raise RuntimeError(f"ingest node exited {code}: {nodes['ingest'].tail()}")
        # The source paused after its last step, so downstream has handled what it sent.
        for group in [n for n in nodes if n.startswith("scoring")] + ["execution"]:
            nodes[group].signal(signal.SIGTERM)
            if nodes[group].wait(60) != 0:
                raise RuntimeError(f"{group} node failed: {nodes[group].tail()}")
        if scoring_partitions > 1:
            outs["scoring"] = parts[0]  # merged below
            wait_until(lambda: all(p.exists() for p in parts), 10, "recorder files")
        wait_until(lambda: all(p.exists() for p in outs.values()), 10, "recorder files")
    finally:
        stop.set()
        for node in nodes.values():
            node.kill()
        if cfg_sections["nats"]:
            anyio.run(drop_streams, msgspec.convert(cfg_sections["nats"], NatsConfig))
    records = {stage: np.load(path) if path.exists() else _empty() for stage, path in outs.items()}
    if scoring_partitions > 1:
        records["scoring"] = np.concatenate([np.load(p) for p in parts if p.exists()])
    return records, json.loads(steps_path.read_text()), drops, cpu, None

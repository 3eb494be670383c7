"""Raw NATS, for scale: the split pipeline's traffic between three processes, no engine.

The transport floor under ``bench.bench_pipeline``'s ``procs`` configuration: the same three
processes (ingest | scoring | execution), the same messages per bar over the same hops, paced
the same way (``bench.pipeline_feed.paced``: warm-up, settle, the rate ladder with its pauses),
each message one plain publish of a payload of about the engine's size, and no stage work at
all:

  ingest     per bar: the bar (msgpack of the real ``Bar``) to scoring and execution (both
             consume bars), a features payload (``len(SCHEMA.names)`` floats) to scoring
  scoring    per features payload: a signal payload to execution
  execution  nothing: its portfolio snapshots and risk status stay local, as the engine's
             mirror (``[nats] mirror = "consumed"``) sends only what another group consumes

What the three processes spend per bar (user + system CPU, sampled from ``/proc`` as the engine
run is) is the least that splitting costs on this machine with that client, whatever the engine
does: on a VM, a socket write that wakes another process costs tens of µs, and so does waking
up for a read. ``client`` picks it: ``py`` is nats-py (a ``publish`` per message, flushed by
its flusher task, a task per subscription), ``link`` is levibot's own ``CoreLink`` as the
engine uses it (every message of a read handled inside the read, what a loop turn published
in one write), so the two floors say what the client costs and what is left to the machine.
Latency (wall clock, as the engine's recorders): ``scoring`` when the signal is published,
``order`` when execution has it. The result has ``bench_pipeline``'s shape
(records, steps, cpu), so ``pipeline_stats.summarize`` reads it as it reads the engine's.

    python -m bench.raw_nats_split [--client py|link] [--rates 1000 2000] [--symbols 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np
import uvloop

from bench.pipeline_feed import BarMaker, paced
from bench.pipeline_model import load_real_klines
from levibot.bus._link import CoreLink
from levibot.testenv import NATS_URL

ROLES = ("ingest", "scoring", "execution")
CLIENTS = ("py", "link")
#: What a subscription does with a payload: maybe a (subject, payload) to publish in reply.
Handler = Callable[[bytes], "tuple[str, bytes] | None"]


async def _connect(client: str, url: str) -> Any:
    return await CoreLink(url).connect() if client == "link" else await nats.connect(url)


async def _subscribe(nc: Any, subject: str, handle: Handler) -> None:
    """Call ``handle`` on every payload and publish what it returns: nats-py's way (a coroutine
    callback run by the subscription's task, an awaited publish) or the link's (inside the
    read, a publish queued for the loop turn's one write)."""
    if isinstance(nc, CoreLink):

        def on_link(_subject: str, _reply: str, data: bytes, _headers: Any) -> None:
            out = handle(data)
            if out is not None:
                nc.publish_nowait(*out)

        nc.subscribe(subject, on_link)
        return

    async def on_msg(msg: Any) -> None:
        out = handle(msg.data)
        if out is not None:
            await nc.publish(*out)

    await nc.subscribe(subject, cb=on_msg)


async def _ingest(client: str, url: str, ns: str, p: dict[str, Any], out: Path) -> None:
    from levibot.features import SCHEMA

    nc = await _connect(client, url)
    maker = BarMaker(load_real_klines(), p["symbols"])
    encode = msgspec.msgpack.Encoder().encode
    values = [0.5] * len(SCHEMA.names)

    async def send(i: int, ingress: int) -> None:
        bar = maker.make(i, time.time_ns(), ingress)
        await nc.publish(f"{ns}.bar.{bar.symbol}", encode(bar))
        await nc.publish(f"{ns}.feat.{bar.symbol}", encode((ingress, bar.symbol, values)))

    async def unmeasured(i: int) -> None:
        await send(i, 0)

    async def emit(i: int) -> None:
        await send(i, time.time_ns())

    n = p["symbols"] * p["warmup_bars"]
    await paced(p["warmup_rate"], n / p["warmup_rate"], unmeasured, on_time=False)
    await asyncio.sleep(p["settle_s"])
    steps = []
    for rate in p["rates"]:
        start, end, count = await paced(rate, p["step_s"], emit)
        steps.append({"rate": rate, "start_ns": start, "end_ns": end, "bars": count})
        await asyncio.sleep(p["pause_s"])
    await nc.flush()
    await nc.close()
    out.write_text(json.dumps(steps))  # noqa: ASYNC240 (once, after the measured steps)


async def _scoring(client: str, url: str, ns: str, out: Path, ready: Path) -> None:
    nc = await _connect(client, url)
    decode = msgspec.msgpack.Decoder(tuple[int, str, list[float]]).decode
    encode = msgspec.msgpack.Encoder().encode
    rows: list[tuple[int, int, int]] = []

    def on_features(data: bytes) -> tuple[str, bytes]:
        ingress, symbol, values = decode(data)
        now = time.time_ns()
        signal_ = (ingress, now, symbol, "long", values[0], "bench-model", 100.0, 1.0, 2.0)
        if ingress:
            rows.append((ingress, now - ingress, 0))
        return f"{ns}.signal.{symbol}", encode(signal_)

    decode_bar = msgspec.msgpack.Decoder(_bar_type()).decode

    def on_bar(data: bytes) -> None:  # read, as the engine's scoring reads every bar
        decode_bar(data)

    await _serve(nc, [(f"{ns}.feat.>", on_features), (f"{ns}.bar.>", on_bar)], ready)
    np.save(out, np.array(rows, dtype=np.int64).reshape(-1, 3))


async def _execution(client: str, url: str, ns: str, out: Path, ready: Path) -> None:
    nc = await _connect(client, url)
    bar_type = _bar_type()
    decode_bar = msgspec.msgpack.Decoder(bar_type).decode
    decode_signal = msgspec.msgpack.Decoder(tuple[int, int, str, str, float, str, float, float,
                                                  float]).decode  # fmt: skip
    rows: list[tuple[int, int, int]] = []

    def on_bar(data: bytes) -> None:
        decode_bar(data)  # the order actor marks and fills on it: nothing goes out

    def on_signal(data: bytes) -> None:
        ingress = decode_signal(data)[0]
        if ingress:
            rows.append((ingress, time.time_ns() - ingress, 0))

    await _serve(nc, [(f"{ns}.bar.>", on_bar), (f"{ns}.signal.>", on_signal)], ready)
    np.save(out, np.array(rows, dtype=np.int64).reshape(-1, 3))


def _bar_type() -> Any:
    from levibot.messages import Bar

    return Bar


async def _serve(nc: Any, subs: list[tuple[str, Handler]], ready: Path) -> None:
    """Subscribe, say ready, run until SIGTERM; then close the connection."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    for subject, handle in subs:
        await _subscribe(nc, subject, handle)
    await nc.flush()
    ready.touch()  # noqa: ASYNC240 (once, before any measured message)
    await stop.wait()
    await nc.close()


def run_raw_split(
    params: dict[str, Any], url: str = NATS_URL, client: str = "py"
) -> tuple[Any, ...]:
    """Run the three raw processes on ``client`` (``CLIENTS``) through ``params``' warm-up and
    ladder (``bench_pipeline``'s ``pbars`` parameters); return (records, steps, drops, cpu,
    error) as ``run_procs`` does."""
    from bench.pipeline_engine import process_cpu_s
    from bench.raw_nats_hop import wait_ready

    tmp = Path(tempfile.mkdtemp(prefix="lbrawsplit"))
    ns = f"lbrs{uuid.uuid4().hex[:8]}"
    files = {r: tmp / f"{r}.npy" for r in ROLES}
    steps_path = tmp / "steps.json"
    (tmp / "params.json").write_text(json.dumps(params))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    cpu: list[tuple[int, float]] = []
    last: dict[int, float] = {}
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            for p in list(procs.values()):
                last[p.pid] = process_cpu_s(p.pid, last.get(p.pid, 0.0))
            cpu.append((time.time_ns(), sum(last.values())))
            stop.wait(0.1)

    def start(role: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "bench.raw_nats_split", "--role", role, "--nats", url,
               "--ns", ns, "--dir", str(tmp), "--client", client]  # fmt: skip
        return subprocess.Popen(cmd)

    scraper = threading.Thread(target=scrape, daemon=True)
    try:
        for role in ("execution", "scoring"):
            procs[role] = start(role)
            wait_ready(procs[role], tmp / f"{role}.ready", f"raw split {role}")
        procs["ingest"] = start("ingest")
        scraper.start()
        if procs["ingest"].wait(600) != 0:
            raise RuntimeError("raw split ingest failed")
        for role in ("scoring", "execution"):
            procs[role].send_signal(signal.SIGTERM)
            if procs[role].wait(30) != 0:
                raise RuntimeError(f"raw split {role} failed")
    finally:
        stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    scoring, order = np.load(files["scoring"]), np.load(files["execution"])
    # No feature stage runs here: its rows say when each bar left ingest (latency 0).
    emitted = np.zeros_like(scoring)
    emitted[:, 0] = scoring[:, 0]
    records = {"feature": emitted, "scoring": scoring, "risk": order, "order": order}
    return records, json.loads(steps_path.read_text()), [], cpu, None


def _role(args: argparse.Namespace) -> None:
    tmp, c = Path(args.dir), args.client
    if args.role == "ingest":
        params = json.loads((tmp / "params.json").read_text())
        uvloop.run(_ingest(c, args.nats, args.ns, params, tmp / "steps.json"))
    elif args.role == "scoring":
        uvloop.run(_scoring(c, args.nats, args.ns, tmp / "scoring.npy", tmp / "scoring.ready"))
    else:
        uvloop.run(
            _execution(c, args.nats, args.ns, tmp / "execution.npy", tmp / "execution.ready")
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default=NATS_URL)
    p.add_argument("--client", choices=CLIENTS, default="py")
    p.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    p.add_argument("--ns", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--rates", type=float, nargs="+", default=[1000.0, 2000.0])
    p.add_argument("--symbols", type=int, default=16)
    p.add_argument("--step-s", type=float, default=2.0)
    args = p.parse_args()
    if args.role:
        _role(args)
        return
    from bench.pipeline_stats import summarize

    params = {"symbols": args.symbols, "warmup_bars": 240, "warmup_rate": 4000.0,
              "settle_s": 1.0, "rates": args.rates, "step_s": args.step_s,
              "pause_s": 1.0}  # fmt: skip
    records, steps, drops, cpu, _ = run_raw_split(params, args.nats, args.client)
    for s in summarize(records, steps, drops, cpu, pause_ns=int(0.8e9)):
        e = s["stages"]["order"]
        print(f"{s['rate']:>7,.0f} bars/s  e2e p50={e['p50_us']:.0f}µs p99={e['p99_us']:.0f}µs  "
              f"cpu={s['cpu_us_per_bar']:.0f}µs/bar  ok={s['ok']}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Live-mode chaos: the split pipeline on replayed-at-speed data, with kill -9 and network faults.

Three ``levibot run`` processes (ingest | scoring | execution) run on the live clock (lossy
mailboxes, no settle rounds, market data, features and signals on core NATS) in their own NATS
namespace; each talks to NATS through its own ``FaultProxy``. A ``Plan`` of seeded faults is
played against them while the real BTCUSDT 1h bars are replayed at ``rate`` bars a second.
Live output is not deterministic, so ``check`` asserts invariants instead of comparing runs:

- every ``OrderIntent`` in the stream has exactly one outcome (its ``Fill`` or a ``rejected``
  ``OrderClosed``), fill ids and order ids are unique, every exit fill belongs to a filled entry,
  and the risk engine is left with no approved order pending;
- the order actor's portfolio (its state file and its last ``PortfolioSnapshot``) equals cash
  and positions recomputed from the fills in the stream;
- bars are never invented or duplicated on the way from ingest to execution, and a bar lost
  outside a fault window is counted by a drop counter the nodes export; the loss inside fault
  windows (a dead process, a cut connection: core NATS keeps nothing) is measured and reported.

Used by ``tests/e2e/test_chaos_live.py`` (a few runs in CI) and ``bench/chaos_live.py`` (many).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
from nats.js import api

from levibot.bus._frame import FrameDecoder, is_frame
from levibot.data import ensure_btcusdt
from levibot.messages import (
    CORE_TYPES,
    Codec,
    Fill,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    Side,
)
from levibot.testing import NodeProcess, wait_until, write_config
from tests.e2e.faults import FaultProxy, LoopThread

NATS_PORT = 4222
PROCS = ("ingest", "scoring", "execution")
KINDS = ("kill", "latency", "stall", "stall_up", "cut")  # (and "stall_up_kill")
CASH = 10_000.0
SLACK_NS = 1_500_000_000  # a fault window is widened by this much on each side


@dataclass(frozen=True)
class Fault:
    """One fault: once the running ingest has emitted ``at_bar`` bars, do ``kind`` to ``target``.

    Injection points are counted in bars, not seconds, so that a loaded machine (slow starts
    and restarts) shifts the data, not the fault, and every run sees its faults mid-stream.
    """

    at_bar: int
    target: str
    kind: str
    duration_s: float = 0.0
    latency_s: float = 0.0

    def __str__(self) -> str:
        extra = f" {self.latency_s * 1e3:.0f}ms" if self.kind == "latency" else ""
        span = f" {self.duration_s:.1f}s" if self.duration_s else ""
        return f"{self.kind}{extra}:{self.target}@bar{self.at_bar}{span}"


@dataclass(frozen=True)
class Plan:
    """What one run replays and which faults it suffers.

    After the last fault the run goes on until the order actor has persisted ``fills_after``
    more fills (the pipeline demonstrably trades again) or the replay of at most ``bars`` bars
    ends, then ingest is stopped and the rest drains.
    """

    seed: int
    faults: tuple[Fault, ...] = ()
    bars: int = 4_000
    rate: float = 150.0  # bars a second (the replay speed is rate × the 1h timeframe)
    fills_after: int = 2  # 0: run until the replay ends
    env: tuple[tuple[str, str, str], ...] = ()  # (process, variable, value) overrides


def random_plan(seed: int, *, kills: int = 1, net: int = 0, first: int = 60,
                last: int = 700) -> Plan:  # fmt: skip
    """Return a plan of ``kills`` kill -9 and ``net`` network faults at seeded random bars."""
    rng = random.Random(seed)
    faults = [
        Fault(at_bar=rng.randint(first, last), target=rng.choice(PROCS), kind="kill")
        for _ in range(kills)
    ]
    for _ in range(net):
        kind = rng.choice(KINDS[1:])
        faults.append(
            Fault(
                at_bar=rng.randint(first, last),
                target=rng.choice(PROCS),
                kind=kind,
                duration_s=round(rng.uniform(0.3, 2.0), 2),
                latency_s=rng.choice((0.005, 0.05, 0.2)) if kind == "latency" else 0.0,
            )
        )
    return Plan(seed=seed, faults=tuple(sorted(faults, key=lambda f: f.at_bar)))


def parse_seeds(spec: str) -> list[int]:
    """Return the seeds of ``"1-30"`` or ``"3,7,9"`` (or both: ``"1-5,9"``)."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


@dataclass
class Outcome:
    """What a run left behind, read once every process has stopped."""

    plan: Plan
    namespace: str
    events: list[Any]  # the order stream: intents, denials, accepts, fills, closes
    snapshot: PortfolioSnapshot | None  # the last one seen on core NATS
    portfolio: dict[str, Any]  # the order actor's state file
    risk: dict[str, Any]  # the risk actor's state file
    published: list[tuple[str, int, int]]  # bars ingest handed to the bus: (symbol, ts, wall ns)
    received: list[tuple[str, int]]  # bars that reached execution
    metrics: dict[str, dict[str, float]]  # each node's final /metrics, summed per name
    windows: list[tuple[str, str, int, int]] = field(default_factory=list)  # fault, target, ns
    exit_codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _samples(port: int) -> list[tuple[str, float]]:
    """Return a node's /metrics as (name and labels, value) pairs, [] if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out.append((key, float(value)))
    return out


def scrape(port: int) -> dict[str, float]:
    """Return a node's /metrics summed per metric name (labels folded), {} if unreachable."""
    out: dict[str, float] = {}
    for key, value in _samples(port):
        name = key.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + value
    return out


def scrape_labelled(port: int, name: str) -> dict[str, float]:
    """Return the series of metric ``name`` by their label text."""
    return {
        key[len(name) :]: value
        for key, value in _samples(port)
        if key == name or key.startswith(name + "{")
    }


class Recorder:
    """A NATS client in the test process: keeps the last PortfolioSnapshot, reads the stream."""

    def __init__(self, lt: LoopThread, ns: str) -> None:
        self.lt, self.ns = lt, ns
        self.codec = Codec(CORE_TYPES)
        self.frames = FrameDecoder(self.codec)
        self.snapshot: PortfolioSnapshot | None = None

        async def start() -> Any:
            nc = await nats.connect(f"nats://127.0.0.1:{NATS_PORT}")

            async def on_snapshot(raw: Any) -> None:
                # Core NATS carries frames (``levibot.bus._frame``): the last snapshot in it.
                if is_frame(raw.data):
                    msgs: list[Any] = self.frames.decode(raw.data)[3]
                else:
                    msgs = [self.codec.decode(raw.data)]
                for msg in msgs:
                    if isinstance(msg, PortfolioSnapshot):
                        self.snapshot = msg

            await nc.subscribe(f"{ns}.lb.portfolio", cb=on_snapshot)
            await nc.flush()
            return nc

        self.nc = lt.call(start())

    def consumers_idle(self) -> bool:
        """True when every durable consumer of the run's stream has nothing pending or unacked."""

        async def check() -> bool:
            js = self.nc.jetstream()
            try:
                infos = await js.consumers_info(self.ns.upper())
            except Exception:
                return False
            return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)

        return self.lt.call(check())

    def stream(self) -> list[Any]:
        """Return every message of the order subjects in the run's stream, in stream order."""

        async def read() -> list[Any]:
            js = self.nc.jetstream()
            sub = await js.pull_subscribe(
                f"{self.ns}.lb.order.>", stream=self.ns.upper(),
                config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
            )  # fmt: skip
            out: list[Any] = []
            while True:
                try:
                    batch = await sub.fetch(500, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    break  # read to the end
                for raw in batch:
                    out.append(self.codec.decode(raw.data))
                    await raw.ack()
            await sub.unsubscribe()
            return out

        return self.lt.call(read(), 60)

    def close(self) -> None:
        """Delete the run's streams (its own and any the nodes added beside it, a dead-letter
        stream say) so that the shared server keeps nothing of the run; disconnect."""

        async def stop() -> None:
            js = self.nc.jetstream()
            with contextlib.suppress(Exception):
                for info in await js.streams_info():
                    if info.config.name.startswith(self.ns.upper()):
                        await js.delete_stream(info.config.name)
            with contextlib.suppress(Exception):
                await self.nc.close()

        with contextlib.suppress(Exception):
            self.lt.call(stop(), 15)


class LiveCluster:
    """The three processes of one run, each behind its own fault proxy."""

    def __init__(self, tmp: Path, plan: Plan, lt: LoopThread) -> None:
        self.tmp, self.plan, self.lt = tmp, plan, lt
        self.ns = f"live{uuid.uuid4().hex[:10]}"
        self.proxies = {p: FaultProxy(lt, NATS_PORT, p) for p in PROCS}
        self.nodes: dict[str, NodeProcess] = {}
        self.windows: list[tuple[str, str, int, int]] = []
        self.exit_codes: dict[str, int] = {}
        self.incarnation = dict.fromkeys(PROCS, 0)
        self.metrics: dict[str, dict[str, float]] = {}
        self.config = write_config(
            tmp / "live.toml",
            {
                "node": {"plugins": ["tests.e2e.chaos_actors"], "drain_timeout_s": 20.0},
                "storage": {"data_dir": str(tmp / "data")},
                # mirror "all": the Recorder reads PortfolioSnapshot, which only risk consumes.
                "nats": {"url": "nats://127.0.0.1:1", "namespace": self.ns,
                         "stream": self.ns.upper(), "ack_wait_s": 2.0, "connect_timeout_s": 2.0,
                         "mirror": "all"},
                "groups": {"ingest": ["feed", "feature", "tally_out"], "scoring": ["scoring"],
                           "execution": ["risk", "order", "tally_in"]},
                "feed": {},
                "feed.replay": {"path": str(ensure_btcusdt()), "limit": plan.bars,
                                "speed": 3600.0 * plan.rate},
                "scoring": {"strategies": ["ema_cross"]},
                "risk": {"preset": "off", "sizing": "all_in", "initial_equity": CASH},
                "order": {"fill": "close", "cash": CASH},
                "tally_out": {"path": str(tmp / "published.bars")},
                "tally_in": {"path": str(tmp / "received.bars")},
            },
        )  # fmt: skip

    def start(self, proc: str, *, wait: bool = True) -> NodeProcess:
        """Start (or restart) ``proc`` through its proxy and (by default) wait until ready."""
        self.incarnation[proc] += 1
        node = NodeProcess(
            self.config, "--groups", proc,
            log=self.tmp / f"{proc}-{self.incarnation[proc]}.log",
            env={"LEVIBOT__NATS__URL": self.proxies[proc].url,
                 **{k: v for p, k, v in self.plan.env if p == proc}},
        )  # fmt: skip
        self.nodes[proc] = node
        if wait:
            node.wait_ready(90)
        return node

    def bars_emitted(self) -> float:
        """Return the bars the current ingest incarnation's feed produced."""
        series = scrape_labelled(self.nodes["ingest"].port, "levibot_feed_messages_total")
        return sum(v for k, v in series.items() if 'type="Bar"' in k)

    def apply(self, fault: Fault) -> None:
        """Inject ``fault`` now; return once it is over (healed, or the process is back)."""
        begin = time.time_ns()
        if fault.kind == "kill":
            self.kill(fault.target)
            self.start(fault.target)
        elif fault.kind == "stall_up_kill":
            # The process dies while its uplink is stalled, after it has acted on its input:
            # two more fills persisted by the order actor than when the stall began.
            proxy = self.proxies[fault.target]
            proxy.stall(up=True, down=False)
            base = self.order_fills()
            try:
                wait_until(lambda: self.order_fills() >= base + 2, 60, "2 fills in the stall")
            except AssertionError as exc:  # not an invariant: the run did not trade
                raise RuntimeError(str(exc)) from None
            self.kill(fault.target)
            proxy.heal()  # what was on the wire still arrives, as TCP would deliver it
            self.start(fault.target)
        else:
            proxy = self.proxies[fault.target]
            if fault.kind == "latency":
                proxy.latency(fault.latency_s)
            elif fault.kind == "stall":
                proxy.stall()
            elif fault.kind == "stall_up":
                proxy.stall(up=True, down=False)
            else:
                reconnects = self.reconnects(fault.target)
                proxy.cut()
            time.sleep(fault.duration_s)  # the fault's length is part of the plan
            proxy.heal()
            if fault.kind == "cut":  # the window lasts until the client is back and subscribed
                wait_until(lambda: self.reconnects(fault.target) > reconnects, 120, "reconnect")
        end = time.time_ns() + int(fault.latency_s * 1e9)
        self.windows.append((fault.kind, fault.target, begin, end))

    def reconnects(self, proc: str) -> float:
        """Return how often ``proc`` reconnected to NATS (nats.py calls back once re-subscribed)."""
        return scrape(self.nodes[proc].port).get("levibot_nats_reconnects_total", 0.0)

    def kill(self, proc: str) -> None:
        """SIGKILL ``proc``: no drain, nothing saved beyond what is already on disk."""
        node = self.nodes[proc]
        node.proc.kill()
        node.wait(30)
        self.exit_codes[f"{proc}-{self.incarnation[proc]}"] = -9

    def order_fills(self) -> int:
        """Return how many fills the order actor's state file records (0 before the first)."""
        try:
            state = json.loads((self.tmp / "data" / "state" / "portfolio.json").read_text())
        except (OSError, ValueError):
            return 0
        return int(state.get("fills", 0))

    def quiet(self) -> bool:
        """True when the downstream nodes are idle and the stream has nothing undelivered."""
        for proc in ("scoring", "execution"):
            m = scrape(self.nodes[proc].port)
            if not m or m.get("levibot_mailbox_depth", 1) or m.get("levibot_nats_egress_queue", 1):
                return False
        return True

    def feed_done(self) -> bool:
        """True when the running ingest has replayed every bar of the plan."""
        return self.bars_emitted() >= self.plan.bars

    def stop_ingest(self) -> None:
        """Scrape ingest's metrics, then stop it gracefully (what it queued is published)."""
        self.metrics["ingest"] = scrape(self.nodes["ingest"].port)
        self.nodes["ingest"].signal(signal.SIGTERM)
        self.exit_codes[f"ingest-{self.incarnation['ingest']}"] = self.nodes["ingest"].wait(60)

    def stop_all(self) -> dict[str, dict[str, float]]:
        """Scrape the downstream nodes' metrics, then SIGTERM them and record exit codes."""
        metrics = self.metrics
        for proc in ("scoring", "execution"):
            metrics[proc] = scrape(self.nodes[proc].port)
        # The inboxes bars go through at execution (the others conflate signals, not bars).
        dropped = scrape_labelled(self.nodes["execution"].port, "levibot_mailbox_dropped")
        metrics["execution"]["bar_mailbox_dropped"] = sum(
            v for k, v in dropped.items() if 'actor="order"' in k or 'actor="tally_in"' in k
        )
        for proc in ("scoring", "execution"):
            node = self.nodes[proc]
            node.signal(signal.SIGTERM)
            self.exit_codes[f"{proc}-{self.incarnation[proc]}"] = node.wait(60)
        return metrics

    def kill_all(self) -> None:
        """Kill whatever still runs (cleanup after a failure) and close the proxies."""
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.kill()
        for proxy in self.proxies.values():
            proxy.close()


def run(tmp: Path, plan: Plan) -> Outcome:
    """Run ``plan`` on a fresh cluster and return what it left; every process is reaped."""
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    lt = LoopThread()
    cluster = LiveCluster(tmp, plan, lt)
    recorder = Recorder(lt, cluster.ns)
    try:
        for proc in ("execution", "scoring"):
            cluster.start(proc, wait=False)  # start together: imports overlap
        for proc in ("execution", "scoring"):
            cluster.nodes[proc].wait_ready(90)
        cluster.start("ingest")  # the data flows once the consumers listen
        for fault in plan.faults:
            wait_until(
                lambda f=fault: cluster.bars_emitted() >= f.at_bar or cluster.feed_done(),
                240, f"bar {fault.at_bar}",
            )  # fmt: skip
            cluster.apply(fault)
        base = cluster.order_fills()
        wait_until(
            lambda: (plan.fills_after and cluster.order_fills() >= base + plan.fills_after)
            or cluster.feed_done(),
            300, "trading after the faults",
        )  # fmt: skip
        cluster.stop_ingest()
        # Quiet twice, apart: a bar or a redelivery still in flight shows up as work.
        wait_until(lambda: cluster.quiet() and recorder.consumers_idle(), 120, "quiescence")
        wait_until(
            lambda: cluster.quiet() and recorder.consumers_idle() and _settled(cluster),
            120, "a settled system",
        )  # fmt: skip
        metrics = cluster.stop_all()
        events = recorder.stream()
        snapshot = recorder.snapshot
    finally:
        cluster.kill_all()
        recorder.close()
        lt.close()
    state = tmp / "data" / "state"
    return Outcome(
        plan=plan,
        namespace=cluster.ns,
        events=events,
        snapshot=snapshot,
        portfolio=json.loads((state / "portfolio.json").read_text()),
        risk=json.loads((state / "risk.json").read_text()),
        published=[(s, int(t), int(w)) for s, t, w in _lines(tmp / "published.bars")],
        received=[(s, int(t)) for s, t, _ in _lines(tmp / "received.bars")],
        metrics=metrics,
        windows=cluster.windows,
        exit_codes=cluster.exit_codes,
        seconds=time.monotonic() - t0,
    )


def _settled(cluster: LiveCluster) -> bool:
    """True when nothing moved on the downstream nodes for half a second."""
    before = [scrape(cluster.nodes[p].port) for p in ("scoring", "execution")]
    time.sleep(0.5)  # a sample interval: compare the work counters half a second apart
    after = [scrape(cluster.nodes[p].port) for p in ("scoring", "execution")]
    keys = ("levibot_actor_handled_total", "levibot_nats_received_total",
            "levibot_nats_published_total")  # fmt: skip
    return all(b.get(k) == a.get(k) for b, a in zip(before, after, strict=True) for k in keys)


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.count(" ") == 2]


# -- invariants --------------------------------------------------------------------------------


@dataclass
class Report:
    """What ``check`` found: counts for the table, and every violated invariant."""

    intents: int = 0
    fills: int = 0
    rejected: int = 0
    denied: int = 0
    published: int = 0
    received: int = 0
    lost_in_windows: int = 0
    lost_outside: int = 0
    counted_drops: float = 0.0
    violations: list[str] = field(default_factory=list)


def check(out: Outcome) -> Report:
    """Check every invariant of the module docstring; return the report (violations listed)."""
    rep = Report()
    bad = rep.violations
    intents = [m for m in out.events if isinstance(m, OrderIntent)]
    fills = [m for m in out.events if isinstance(m, Fill)]
    closed = [m for m in out.events if isinstance(m, OrderClosed)]
    rep.intents, rep.fills = len(intents), len(fills)
    rep.denied = sum(type(m).__name__ == "OrderDenied" for m in out.events)
    rep.rejected = sum(c.reason == "rejected" for c in closed)

    coids = Counter(i.client_order_id for i in intents)
    bad += [f"intent {c} published {n} times" for c, n in coids.items() if n > 1]
    fill_ids = Counter(f.fill_id for f in fills)
    bad += [f"fill {f} published {n} times" for f, n in fill_ids.items() if n > 1]
    filled = Counter(f.client_order_id for f in fills)
    rejected = Counter(c.client_order_id for c in closed if c.reason == "rejected")
    for coid in coids:
        outcomes = filled[coid] + rejected[coid]
        if outcomes != 1:
            bad.append(f"intent {coid} has {outcomes} outcomes (fills {filled[coid]}, "
                       f"rejections {rejected[coid]})")  # fmt: skip
    for f in fills:
        entry, _, reason = f.client_order_id.rpartition(":")
        if f.client_order_id not in coids and not (entry in filled and reason):
            bad.append(f"fill {f.fill_id} belongs to no intent and no filled entry")
    pending = out.risk.get("pending") or {}
    bad += [f"risk still holds approved order {c} with no outcome" for c in pending]

    _reconcile(out, fills, bad)
    _market_data(out, rep)
    bad += [f"{p} exited {rc}" for p, rc in out.exit_codes.items() if rc not in (0, -9)]
    return rep


def _reconcile(out: Outcome, fills: list[Fill], bad: list[str]) -> None:
    """Recompute cash and positions from the fills; compare with the order actor's own."""
    cash = CASH
    qty: dict[str, float] = {}
    for f in fills:
        gross = f.quantity * f.price
        if f.side is Side.BUY:
            cash -= gross + f.fee
            qty[f.symbol] = qty.get(f.symbol, 0.0) + f.quantity
        else:
            cash += gross - f.fee
            qty[f.symbol] = qty.get(f.symbol, 0.0) - f.quantity
    held = {s: q for s, q in qty.items() if abs(q) > 1e-9}
    state = out.portfolio
    if state.get("fills") != len(fills):
        bad.append(f"the order actor counts {state.get('fills')} fills, the stream has "
                   f"{len(fills)}")  # fmt: skip
    views: list[tuple[str, float, dict[str, float]]] = [(
        "state file", state["cash"],
        {s: h["quantity"] for s, h in (state.get("holdings") or {}).items()},
    )]  # fmt: skip
    if out.snapshot is None:  # execution publishes one per bar: its absence is the harness's bug
        bad.append("no PortfolioSnapshot reached the test's core NATS subscriber")
    else:
        snap = out.snapshot
        views.append(("last snapshot", snap.cash, {p.symbol: p.quantity for p in snap.positions}))
    for name, their_cash, their_qty in views:
        if not math.isclose(their_cash, cash, rel_tol=1e-9, abs_tol=1e-6):
            bad.append(f"{name} cash {their_cash!r} != {cash!r} recomputed from the fills")
        for sym in set(held) | set(their_qty):
            if not math.isclose(their_qty.get(sym, 0.0), held.get(sym, 0.0), abs_tol=1e-9):
                bad.append(f"{name} holds {their_qty.get(sym, 0.0)!r} {sym}, the fills say "
                           f"{held.get(sym, 0.0)!r}")  # fmt: skip


def _market_data(out: Outcome, rep: Report) -> None:
    """Bars: nothing invented or doubled; loss outside fault windows within the drop counters."""
    published = Counter((s, t) for s, t, _ in out.published)
    received = Counter(out.received)
    rep.published, rep.received = sum(published.values()), sum(received.values())
    extra = received - published
    if extra:
        rep.violations.append(f"{sum(extra.values())} bars reached execution more often than "
                              f"ingest published them, e.g. {next(iter(extra))}")  # fmt: skip
    lost = published - received
    windows = [(b - SLACK_NS, e + SLACK_NS) for k, tgt, b, e in out.windows
               if tgt in ("ingest", "execution")]  # fmt: skip
    walls: dict[tuple[str, int], list[int]] = {}
    for s, t, w in out.published:
        walls.setdefault((s, t), []).append(w)
    for key, n in lost.items():
        # Which copy of a bar published twice (a restarted ingest replays from the start) was
        # lost is unknown: a loss counts as inside a window when one of its copies was
        # published inside one.
        inside = sum(any(b <= w <= e for b, e in windows) for w in walls[key])
        rep.lost_in_windows += min(n, inside)
        rep.lost_outside += n - min(n, inside)
    m = out.metrics
    execution = m.get("execution", {})
    rep.counted_drops = (
        m.get("ingest", {}).get("levibot_nats_egress_dropped_total", 0.0)
        + execution.get("bar_mailbox_dropped", 0.0)
        + execution.get("levibot_nats_ingress_gaps_total", 0.0)  # lost on the way (a cut)
    )
    if rep.lost_outside > rep.counted_drops:
        rep.violations.append(
            f"{rep.lost_outside} bars lost outside any fault window, only "
            f"{rep.counted_drops:g} counted by the nodes' drop counters"
        )


def summary(out: Outcome, rep: Report) -> dict[str, Any]:
    """Return one row for the report table."""
    return {
        "seed": out.plan.seed,
        "faults": " ".join(str(f) for f in out.plan.faults) or "none",
        "intents": rep.intents,
        "fills": rep.fills,
        "rejected": rep.rejected,
        "denied": rep.denied,
        "bars_pub": rep.published,
        "bars_recv": rep.received,
        "lost_in_fault": rep.lost_in_windows,
        "lost_outside": rep.lost_outside,
        "counted": rep.counted_drops,
        "seconds": round(out.seconds, 1),
        "violations": len(rep.violations),
    }


def dump(out: Outcome) -> str:
    """Return the outcome's essentials as text, for a failing assertion."""
    return msgspec.json.encode(
        {"plan": str(out.plan), "windows": out.windows, "exit": out.exit_codes}
    ).decode()

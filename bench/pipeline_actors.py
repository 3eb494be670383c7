"""Actors for the pipeline benchmark: a paced bar source with a rate ladder, and recorders.

``PipeSource`` (``pbars``) replaces the feed: it replays the real BTCUSDT klines as 1s ``Bar``s
over N symbols (one bar is one tick-equivalent: every bar goes through feature → scoring →
risk → order), first a warm-up of ``warmup_bars`` per symbol at ``warmup_rate`` with
``ts_ingress = 0`` (not measured), then one step per rate of ``rates``, each ``step_s`` long and
followed by a ``pause_s`` of silence so the queues drain before the next step. Ingress is the
time the bar is emitted (the live clock: wall time).

The recorders (``prec_feature``, ``prec_scoring``, ``prec_risk``, ``prec_order``) each consume one
stage's output (``Features``; ``Signal``; ``OrderIntent`` and ``OrderDenied``; ``Fill``) and keep
``(ts_ingress, ts_init - ts_ingress)`` per message: on the live clock ``ts_init`` is the wall
time the stage created the message, so this is the latency at that stage's output, comparable
across processes on one machine. Each recorder lives in the process that produces its type, so
recording adds no NATS traffic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import anyio
import anyio.lowlevel
import numpy as np
from msgspec import Meta

from bench.pipeline_feed import BarMaker, paced
from bench.pipeline_model import load_real_klines
from levibot.config import Config
from levibot.messages import Bar, Features, Fill, Message, OrderDenied, OrderIntent, Signal
from levibot.registry import register
from levibot.runtime import Actor, SourceActor


class SourceConfig(Config, frozen=True, kw_only=True):
    symbols: Annotated[int, Meta(ge=1)] = 16
    warmup_bars: Annotated[int, Meta(ge=0)] = 240  # per symbol, unmeasured
    warmup_rate: Annotated[float, Meta(gt=0)] = 4_000.0  # bars/s
    settle_s: Annotated[float, Meta(ge=0)] = 1.0  # quiet time after the warm-up
    rates: tuple[float, ...] = (1_000.0, 2_000.0)  # bars/s, one step each
    step_s: Annotated[float, Meta(gt=0)] = 2.0
    pause_s: Annotated[float, Meta(ge=0)] = 1.0
    out: str = ""  # JSON file for the step windows (process mode)


class PipeSource(SourceActor[SourceConfig]):
    """The benchmark's feed: a warm-up, then the rate ladder."""

    name = "pbars"
    emits = (Bar,)
    config_type = SourceConfig

    async def on_start(self) -> None:
        self.maker = BarMaker(load_real_klines(), self.config.symbols)
        self.steps: list[dict[str, Any]] = []

    async def run(self) -> None:
        cfg, publish, make = self.config, self.ctx.publish, self.maker.make
        now_ns = self.ctx.clock.now_ns

        async def unmeasured(i: int) -> None:
            await publish(make(i, now_ns(), 0))

        # Paced, so that downstream processes are not still digesting it when measuring starts.
        n = cfg.symbols * cfg.warmup_bars
        await paced(cfg.warmup_rate, n / cfg.warmup_rate, unmeasured, on_time=False)
        await self.ctx.settle()
        await anyio.sleep(cfg.settle_s)
        for rate in cfg.rates:

            async def emit(i: int) -> None:
                now = now_ns()
                await publish(make(i, now, now))

            start, end, count = await paced(rate, cfg.step_s, emit)
            self.steps.append({"rate": rate, "start_ns": start, "end_ns": end, "bars": count})
            await anyio.sleep(cfg.pause_s)
        if cfg.out:
            _write(cfg.out, json.dumps(self.steps))


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)  # once, after the measured steps


class RecorderConfig(Config, frozen=True, kw_only=True):
    out: str = ""  # .npy file: rows of (ts_ingress, latency ns, kind), written on stop


class PipeRecorder(Actor[RecorderConfig]):
    """Keep ``(ts_ingress, ts_init - ts_ingress, kind)`` of every measured message it gets."""

    config_type = RecorderConfig
    mailbox_size = 1 << 20  # never the bottleneck, never conflating
    max_batch = 4096
    kinds: ClassVar[tuple[type[Message], ...]] = ()

    async def on_start(self) -> None:
        self.ingress: list[int] = []
        self.lat: list[int] = []
        self.kind: list[int] = []

    async def handle(self, msg: Any) -> None:
        await self.handle_batch([msg])

    async def handle_batch(self, msgs: Sequence[Any]) -> None:
        ingress, lat, kind, kind_of = self.ingress, self.lat, self.kind, self.kind_of
        for m in msgs:
            if m.ts_ingress:
                ingress.append(m.ts_ingress)
                lat.append(m.ts_init - m.ts_ingress)
                kind.append(kind_of(m))

    def kind_of(self, msg: Any) -> int:
        """Return 0 for the main path's message, 1 for the other kind (a denial, an exit)."""
        return 0 if isinstance(msg, self.consumes[0]) else 1

    def array(self) -> np.ndarray:
        """Return the records as an (n, 3) int64 array."""
        return np.array([self.ingress, self.lat, self.kind], dtype=np.int64).T.reshape(-1, 3)

    async def on_stop(self) -> None:
        if self.config.out:
            np.save(self.config.out, self.array())


def _recorder(stage: str, types: tuple[type[Message], ...]) -> type[PipeRecorder]:
    name = f"Rec{stage.capitalize()}"
    cls = type(name, (PipeRecorder,), {"name": f"prec_{stage}", "consumes": types})
    return cls


class RecOrder(PipeRecorder):
    """Fills: kind 0 for an order from a signal (the tick-to-order path), 1 for an exit rule's
    (stop-loss, take-profit: a bar straight to the order actor, no feature/scoring/risk)."""

    name = "prec_order"
    consumes = (Fill,)

    def kind_of(self, msg: Any) -> int:
        return 0 if msg.reason == "signal" else 1


#: stage → recorder actor; "risk" counts intents (kind 0) and denials (kind 1) alike.
RECORDERS: dict[str, type[PipeRecorder]] = {
    "feature": _recorder("feature", (Features,)),
    "scoring": _recorder("scoring", (Signal,)),
    "risk": _recorder("risk", (OrderIntent, OrderDenied)),
    "order": RecOrder,
}

_ACTORS: list[type[Actor[Any]]] = [PipeSource, *RECORDERS.values()]  # RecOrder included
for _cls in _ACTORS:
    globals()[_cls.__name__] = _cls
    register(_cls.name, f"{__name__}:{_cls.__name__}")

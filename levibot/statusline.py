"""The live status line of ``levibot run`` and ``levibot demo`` on a terminal, drawn with rich.

One line at the foot of the terminal, redrawn four times a second: message rates, latency, the
equity and the last signal. Log lines scroll above it: while it runs, stdout and stderr go
through ``FootedTerminal``, which writes each complete line above the status line and draws the
line again below it (the logger is configured after the line starts, so it writes there too).
Off when stderr is not a terminal: the logs are then exactly what they always were.

rich renders the line (styles, the terminal's colours and width, cut with an ellipsis so that it
never wraps); the redraw is three escape sequences of our own rather than rich's ``Live``, whose
stdout/stderr redirection costs about half a millisecond per log line (it decodes each line's
ANSI codes and re-renders the live area): a replay that logs a few hundred lines a second ran
1.5 times slower with it (bench/bench_statusline.py).

What it shows comes from the node itself: the metrics registry (handled counters, latency and
handle-time histograms, the equity gauge) and a tap on the local bus that keeps the latest signal
and portfolio snapshot without ever blocking a publisher.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import anyio
from rich.console import Console
from rich.text import Text

from levibot.bus import Mailbox
from levibot.messages import Fill, Message, PortfolioSnapshot, Signal, SignalSide
from levibot.metrics import Histogram, Metrics

REFRESH_S = 0.25
CLEAR_LINE = "\r\x1b[2K"  # to the start of the line, erase it
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def wanted(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (stderr) is a terminal that can redraw a line."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


class Tap(Mailbox):
    """A bus subscriber that keeps the latest signal and portfolio and counts fills.

    It never holds a message, so it never blocks a publisher nor delays a drain, and it
    acknowledges a delivery from NATS at once (its ``done``).
    """

    types: tuple[type[Message], ...] = (Signal, PortfolioSnapshot, Fill)
    __slots__ = ("fills", "portfolio", "signal", "signals")

    def __init__(self) -> None:
        super().__init__("statusline", 1)
        self.signal: Signal | None = None  # the last long or short one
        self.portfolio: PortfolioSnapshot | None = None
        self.signals = 0
        self.fills = 0

    def _take(self, msg: Message, done: Callable[[], None] | None) -> bool:
        if isinstance(msg, Signal):
            self.signals += 1
            if msg.side is not SignalSide.FLAT:
                self.signal = msg
        elif isinstance(msg, PortfolioSnapshot):
            self.portfolio = msg
        elif isinstance(msg, Fill):
            self.fills += 1
        if done is not None:
            done()
        return True

    def offer(self, msg: Message, done: Callable[[], None] | None = None) -> bool:
        return self._take(msg, done)

    def try_put(self, msg: Message, done: Callable[[], None] | None = None) -> bool:
        return self._take(msg, done)

    async def put(self, msg: Message, done: Callable[[], None] | None = None) -> None:
        self._take(msg, done)


@dataclass(frozen=True)
class Status:
    """One reading of the node, as the line shows it."""

    state: str  # "starting", "live" or "replay" (ready), "stopping" (draining), "stopped"
    replay: bool
    msgs_per_s: float  # messages handled by every actor of this node
    signals_per_s: float
    signals: int
    fills: int
    latency_p50_s: float | None  # tick ingress → handle (live clock), over the last interval
    latency_p95_s: float | None
    handle_p95_s: float | None  # time in handle per message, over the last interval
    equity: float | None
    signal: Signal | None


def quantile(counts: list[int], bounds: tuple[float, ...], q: float) -> float | None:
    """Return the upper bound of the bucket holding quantile ``q`` (None: no observations)."""
    total = sum(counts)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return float("inf")


class Sampler:
    """Turns the node's cumulative metrics into rates and recent percentiles between readings."""

    def __init__(self, metrics: Metrics, tap: Tap, now: Callable[[], float] = time.monotonic):
        self.metrics = metrics
        self.tap = tap
        self.now = now
        self._at = now()
        self._handled = self._sum_handled()
        self._signals = tap.signals
        self._hist: dict[str, list[int]] = {}
        self._latest: dict[str, float | None] = {}

    def _sum_handled(self) -> float:
        return self.metrics.value("levibot_actor_handled_total")

    def _recent(
        self, name: str, qs: tuple[float, ...], actor: str | None = None
    ) -> list[float | None]:
        """Quantiles ``qs`` of histogram family ``name`` over the observations since last time
        (the last reading again when there is nothing new)."""
        merged: list[int] | None = None
        bounds: tuple[float, ...] = ()
        for h in self.metrics.find(name, **({"actor": actor} if actor else {})):
            if not isinstance(h, Histogram) or (merged is not None and h.buckets != bounds):
                continue
            bounds = h.buckets
            merged = (
                list(h.counts)
                if merged is None
                else [a + b for a, b in zip(merged, h.counts, strict=True)]
            )
        key = f"{name}/{actor}"
        if merged is None:
            return [None for _ in qs]
        before = self._hist.get(key, [0] * len(merged))
        delta = [a - b for a, b in zip(merged, before, strict=True)]
        self._hist[key] = merged
        if sum(delta) == 0:
            return [self._latest.get(f"{key}/{q}") for q in qs]
        out = [quantile(delta, bounds, q) for q in qs]
        self._latest.update({f"{key}/{q}": v for q, v in zip(qs, out, strict=True)})
        return out

    def read(self, *, state: str, replay: bool) -> Status:
        """Return the status now; rates and percentiles cover the time since the last read."""
        now = self.now()
        dt = max(now - self._at, 1e-9)
        handled = self._sum_handled()
        # Tick to order where an order actor runs here; else every actor's.
        found = self.metrics.find("levibot_actor_latency_seconds", actor="order")
        lat_actor = "order" if any(True for _ in found) else None
        p50, p95 = self._recent("levibot_actor_latency_seconds", (0.5, 0.95), lat_actor)
        (handle95,) = self._recent("levibot_actor_handle_seconds", (0.95,))
        status = Status(
            state=state,
            replay=replay,
            msgs_per_s=(handled - self._handled) / dt,
            signals_per_s=(self.tap.signals - self._signals) / dt,
            signals=self.tap.signals,
            fills=self.tap.fills,
            latency_p50_s=p50,
            latency_p95_s=p95,
            handle_p95_s=handle95,
            equity=self._equity(),
            signal=self.tap.signal,
        )
        self._at, self._handled, self._signals = now, handled, self.tap.signals
        return status

    def _equity(self) -> float | None:
        if self.tap.portfolio is not None:
            return self.tap.portfolio.equity
        if any(True for _ in self.metrics.find("levibot_portfolio_equity")):
            return self.metrics.value("levibot_portfolio_equity")  # the order actor's gauge
        return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds == float("inf"):
        return ">1 s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render(s: Status) -> Text:
    """Return the status line."""
    line = Text(no_wrap=True, overflow="ellipsis")
    if s.state in ("live", "replay"):
        line.append("● ", style="bold green")
        line.append(s.state, style="green")
    else:
        line.append(("○ " if s.state == "starting" else "■ ") + s.state, style="yellow")
    line.append(f"  {s.msgs_per_s:,.0f} msg/s", style="bold")
    line.append(f"  signals {s.signals:,} ({s.signals_per_s:,.1f}/s)  fills {s.fills:,}")
    if s.latency_p95_s is not None:
        line.append(
            f"  tick→order p50 {_duration(s.latency_p50_s)} p95 {_duration(s.latency_p95_s)}"
        )
    else:
        line.append(f"  handle p95 {_duration(s.handle_p95_s)}")
    line.append("  equity ")
    line.append("–" if s.equity is None else f"{s.equity:,.2f}", style="bold cyan")
    line.append("  last ")
    sig = s.signal
    if sig is None:
        line.append("–", style="dim")
    else:
        side = sig.side.value.upper()
        line.append(f"{sig.symbol} ", style="bold")
        line.append(side, style="green" if sig.side is SignalSide.LONG else "red")
        line.append(f" p={sig.probability:.2f} @ {sig.price:,.2f} ({sig.strategy})")
    return line


class FootedTerminal(io.TextIOBase):
    """A text stream for stdout and stderr that keeps ``footer`` on the terminal's last line.

    Complete lines written to it go above the footer (it is erased, the lines written, the
    footer drawn again); a partial line waits for its end.
    """

    def __init__(self, terminal: IO[str]) -> None:
        super().__init__()
        self.terminal = terminal
        self.footer = ""
        self._partial = ""

    def write(self, text: str) -> int:
        """Write ``text``; its complete lines go above the footer."""
        *lines, self._partial = (self._partial + text).split("\n")
        if lines:
            self.terminal.write(CLEAR_LINE + "\n".join(lines) + "\n" + self.footer)
            self.terminal.flush()
        return len(text)

    def draw(self, footer: str) -> None:
        """Replace the footer (one line, no newline)."""
        self.footer = footer
        self.terminal.write(CLEAR_LINE + footer)
        self.terminal.flush()

    def flush(self) -> None:
        self.terminal.flush()

    def isatty(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.terminal.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.terminal, "encoding", "utf-8")


class StatusLine:
    """The line on ``console``'s terminal: start it before configuring the logs (they then
    write above it), run it beside the node."""

    def __init__(self, console: Console | None = None, refresh_s: float = REFRESH_S) -> None:
        self.console = console or Console(file=sys.stderr)
        self.refresh_s = refresh_s
        self.tap = Tap()
        self.footed = FootedTerminal(self.console.file)
        self.sampler: Sampler | None = None
        self._was_ready = False
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> StatusLine:
        self._saved = sys.stdout, sys.stderr
        sys.stderr = self.footed
        if wanted(sys.stdout):  # the same terminal; a redirected stdout stays where it goes
            sys.stdout = self.footed
        self.console.file.write(HIDE_CURSOR)
        self.footed.draw(self._ansi(Text("○ starting", style="yellow")))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        partial = self.footed._partial
        self.console.file.write(CLEAR_LINE + partial + ("\n" if partial else ""))
        self.console.file.write(self.footed.footer + "\n" + SHOW_CURSOR)  # the last reading stays
        self.console.file.flush()

    def _ansi(self, line: Text) -> str:
        """``line`` as the terminal shows it, cut to its width."""
        with self.console.capture() as captured:
            self.console.print(line, end="", soft_wrap=False, crop=True, overflow="ellipsis")
        return captured.get()

    def attach(self, node: Any) -> None:
        """Tap ``node``'s bus and read its metrics."""
        node.bus.subscribe(self.tap, Tap.types)
        self.sampler = Sampler(node.metrics, self.tap)

    def show(self, status: Status) -> None:
        """Redraw the line with ``status``."""
        self.footed.draw(self._ansi(render(status)))

    def refresh(self, node: Any, *, stopped: bool = False) -> None:
        """Read ``node`` and redraw; ``stopped``: its run is over (the last reading)."""
        assert self.sampler is not None, "attach() first"
        replay = bool(node.settings.node.replay)
        self._was_ready = self._was_ready or node.ready
        state = ("replay" if replay else "live") if node.ready else "starting"
        if stopped:
            state = "stopped"
        elif self._was_ready and not node.ready:
            state = "stopping"
        self.show(self.sampler.read(state=state, replay=replay))

    async def run(self, node: Any) -> None:
        """Redraw every ``refresh_s`` until cancelled."""
        while True:
            await anyio.sleep(self.refresh_s)
            self.refresh(node)

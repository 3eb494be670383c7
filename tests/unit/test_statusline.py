"""The terminal status line: its tap on the real bus, its readings of real metrics, its text."""

from __future__ import annotations

import io
import os
import pty
import sys

import pytest
from rich.console import Console

from levibot import statusline
from levibot.bus import LocalBus
from levibot.messages import Fill, PortfolioSnapshot, Side, Signal, SignalSide
from levibot.metrics import Metrics
from levibot.statusline import Sampler, Status, StatusLine, Tap, quantile, render

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000_000_000


def signal(side: SignalSide = SignalSide.LONG, price: float = 43_120.5) -> Signal:
    return Signal(
        ts_event=T0, ts_init=T0, symbol="BTCUSDT", strategy="lgbm", side=side, probability=0.71,
        confidence=0.42, price=price,
    )  # fmt: skip


def portfolio(equity: float) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_event=T0, ts_init=T0, cash=equity, equity=equity, realized_pnl=0.0,
        unrealized_pnl=0.0, fees=0.0, positions=(),
    )  # fmt: skip


def fill(i: int) -> Fill:
    return Fill(
        ts_event=T0, ts_init=T0, symbol="BTCUSDT", fill_id=f"f{i}", client_order_id=f"c{i}",
        side=Side.BUY, quantity=0.5, price=100.0, fee=0.1,
    )  # fmt: skip


def status(**overrides: object) -> Status:
    fields: dict[str, object] = {
        "state": "live", "replay": False, "msgs_per_s": 12_345.0, "signals_per_s": 2.5,
        "signals": 40, "fills": 7, "latency_p50_s": 0.0008, "latency_p95_s": 0.0025,
        "handle_p95_s": 0.00005, "equity": 106_400.0, "signal": signal(),
    }  # fmt: skip
    fields.update(overrides)
    return Status(**fields)  # type: ignore[arg-type]


def text_of(s: Status) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=300, color_system="standard")
    with console.capture() as captured:
        console.print(render(s))
    return captured.get()


async def test_the_tap_keeps_the_last_signal_and_equity_and_never_blocks_the_bus() -> None:
    bus, tap = LocalBus(), Tap()
    bus.subscribe(tap, Tap.types)
    for i in range(1000):  # far more than its capacity of one: nothing waits, nothing is lost
        await bus.publish(signal(price=float(i)))
    await bus.publish(signal(SignalSide.FLAT))  # flat is counted but is no "last signal"
    await bus.publish(portfolio(10_500.0))
    for i in range(3):
        await bus.publish(fill(i))
    assert (tap.signals, tap.fills, len(tap)) == (1001, 3, 0)
    assert tap.signal is not None and tap.signal.price == 999.0
    assert tap.portfolio is not None and tap.portfolio.equity == 10_500.0
    acked: list[int] = []
    assert await bus.deliver_remote(fill(9), lambda: acked.append(1)) == 1
    assert acked == [1] and tap.fills == 4  # a delivery from NATS is acknowledged at once


def test_the_sampler_reads_rates_and_recent_percentiles_from_the_metrics() -> None:
    metrics, tap, clock = Metrics(), Tap(), [100.0]
    handled = {a: metrics.counter("levibot_actor_handled_total", "h", actor=a) for a in "xy"}
    latency = metrics.histogram("levibot_actor_latency_seconds", "l", actor="order")
    other = metrics.histogram("levibot_actor_latency_seconds", "l", actor="feature")
    handle = metrics.histogram("levibot_actor_handle_seconds", "h", actor="x")
    metrics.gauge("levibot_portfolio_equity", "e", fn=lambda: 9_999.0)
    sampler = Sampler(metrics, tap, now=lambda: clock[0])

    handled["x"].inc(300)
    handled["y"].inc(100)
    for _ in range(90):
        latency.observe(0.0009)  # the 1 ms bucket
    for _ in range(10):
        latency.observe(0.04)  # the 50 ms bucket
    other.observe(0.9)  # another actor's: not tick-to-order
    handle.observe(0.00002)
    tap.try_put(signal())
    clock[0] += 2.0
    s = sampler.read(state="live", replay=False)
    assert s.msgs_per_s == 200.0 and s.signals_per_s == 0.5 and s.signals == 1
    assert (s.latency_p50_s, s.latency_p95_s) == (1e-3, 5e-2)
    assert s.handle_p95_s == 2.5e-5
    assert s.equity == 9_999.0  # no snapshot on the bus yet: the order actor's gauge

    # The next reading covers only what happened since: now everything is slow.
    for _ in range(20):
        latency.observe(0.2)
    tap.try_put(portfolio(10_250.0))
    clock[0] += 1.0
    s = sampler.read(state="live", replay=False)
    assert s.msgs_per_s == 0.0 and (s.latency_p50_s, s.latency_p95_s) == (0.25, 0.25)
    assert s.equity == 10_250.0
    clock[0] += 1.0
    s = sampler.read(state="live", replay=False)  # nothing new: the last reading stays
    assert (s.latency_p50_s, s.latency_p95_s, s.handle_p95_s) == (0.25, 0.25, 2.5e-5)


def test_quantiles_of_buckets() -> None:
    assert quantile([0, 0, 0], (1.0, 2.0), 0.5) is None
    assert quantile([5, 5, 0], (1.0, 2.0), 0.5) == 1.0
    assert quantile([5, 5, 0], (1.0, 2.0), 0.95) == 2.0
    assert quantile([0, 1, 9], (1.0, 2.0), 0.95) == float("inf")


def test_the_line_shows_rates_latency_equity_and_the_last_signal() -> None:
    out = text_of(status())
    assert "\x1b[" in out  # coloured on a terminal
    for part in (
        "live", "12,345 msg/s", "signals 40 (2.5/s)", "fills 7", "tick→order p50 800 µs",
        "p95 2.5 ms", "equity", "106,400.00", "BTCUSDT", "LONG", "p=0.71 @ 43,120.50 (lgbm)",
    ):  # fmt: skip
        assert part in out, (part, out)
    # Replay has no live latency: the handle time instead; nothing yet shows as a dash.
    out = text_of(status(replay=True, latency_p50_s=None, latency_p95_s=None, equity=None,
                         signal=None, state="starting"))  # fmt: skip
    assert "starting" in out and "handle p95 50 µs" in out and "tick→order" not in out
    assert "equity –" in out.replace("\x1b[1;36m", "").replace("\x1b[0m", "")
    assert "SHORT" in text_of(status(signal=signal(SignalSide.SHORT)))
    assert "■ stopping" in text_of(status(state="stopping"))
    assert "■ stopped" in text_of(status(state="stopped"))


def test_it_is_wanted_on_a_terminal_only() -> None:
    assert not statusline.wanted(io.StringIO())
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as tty:
            assert statusline.wanted(tty)
            term = os.environ.get("TERM")
            os.environ["TERM"] = "dumb"
            try:
                assert not statusline.wanted(tty)
            finally:
                if term is None:
                    del os.environ["TERM"]
                else:
                    os.environ["TERM"] = term
    finally:
        os.close(leader)
        os.close(follower)


def test_the_live_line_stays_below_what_is_printed_meanwhile() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system="standard")
    with StatusLine(console) as line:
        line.show(status())
        print("a log line", file=sys.stderr)  # redirected above the line while it runs
        line.show(status(signals=41))
    out = buffer.getvalue()
    assert "a log line" in out and "signals 41" in out
    assert out.rindex("signals 41") > out.index("a log line")  # the line is redrawn below
    assert out.endswith("\n\x1b[?25h")  # the last reading stays, the cursor comes back
    assert sys.stderr is not line.footed  # restored


def test_a_redirected_stdout_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    with StatusLine(console) as line:
        assert sys.stderr is line.footed
        assert sys.stdout is not line.footed  # pytest's capture: not a terminal
        print("to the pipe")
    assert capsys.readouterr().out == "to the pipe\n"


def test_lines_written_meanwhile_go_above_the_footer_and_partial_lines_wait() -> None:
    from levibot.statusline import CLEAR_LINE, FootedTerminal

    terminal = io.StringIO()
    footed = FootedTerminal(terminal)
    footed.draw("STATUS 1")
    footed.write("half a ")
    assert terminal.getvalue() == CLEAR_LINE + "STATUS 1"  # nothing until the line ends
    footed.write("line\nsecond line\nthird")
    footed.draw("STATUS 2")
    assert terminal.getvalue() == (
        CLEAR_LINE + "STATUS 1"
        + CLEAR_LINE + "half a line\nsecond line\n" + "STATUS 1"
        + CLEAR_LINE + "STATUS 2"
    )  # fmt: skip
    assert footed.isatty() and footed.writable()

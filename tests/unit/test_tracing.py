"""Tracing (``levibot.tracing``, ``levibot.bus._trace``): off by default and then nothing is
wrapped or imported; on, one trace per source message through every actor, with the in-memory
exporter; the W3C header and the frame headers round-trip; bad ones start a new trace."""

from __future__ import annotations

import gzip
import http.server
import subprocess
import sys
import threading
from typing import Any

import pytest

from levibot import tracing
from levibot.bus import _trace
from levibot.errors import ConfigError
from levibot.messages import Message
from levibot.runtime.node import EXIT_OK, Node
from levibot.settings import TracingConfig, load_settings
from levibot.tracing import Contexts, format_traceparent, parse_traceparent
from tests.pipeline import GROUPS, Num

COUNT = 50


def settings(**tracing_section: Any) -> Any:
    return load_settings(
        None,
        environ={},
        overrides={
            "groups": {"all": ("counter", "square", "sink"), **GROUPS},
            "node": {"groups": ["all"], "http_port": -1, "stop_when_sources_done": True},
            "counter": {"count": COUNT},
            "tracing": tracing_section,
        },
    )


def num(i: int) -> Num:
    return Num(ts_event=i, ts_init=i, ts_ingress=i, symbol="AAA", value=i)


# -- configuration ----------------------------------------------------------------------------


def test_tracing_is_off_by_default_and_its_section_is_validated() -> None:
    assert load_settings(None, environ={}).tracing == TracingConfig()
    assert TracingConfig().enabled is False
    bad: list[tuple[dict[str, Any], str]] = [
        ({"exporter": "jaeger"}, "$.tracing.exporter"),
        ({"exporter": "file"}, "needs a path"),
        ({"endpoint": "127.0.0.1:4318"}, "not an http"),
        ({"sample_ratio": 1.5}, "$.tracing.sample_ratio"),
        ({"enable": True}, "enable"),  # a typo
    ]
    for section, what in bad:
        with pytest.raises(ConfigError) as info:
            settings(**section)
        assert what in str(info.value) or what in (info.value.path or ""), (section, info.value)


def test_off_wraps_nothing_and_never_imports_opentelemetry() -> None:
    node = Node(settings())
    assert node.tracer is None
    for actor in node.actors.values():
        assert "handle" not in vars(actor) and "handle_batch" not in vars(actor)
        assert actor.ctx.publish == node.bus.publish
    # A fresh process that builds and runs a node with tracing off loads no OpenTelemetry.
    code = (
        "import sys, anyio\n"
        "from tests.unit.test_tracing import settings\n"
        "from levibot.runtime.node import Node\n"
        "node = Node(settings())\n"
        "assert anyio.run(lambda: node.run(handle_signals=False)) == 0\n"
        "print('OTEL', sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "OTEL []" in out.stdout.splitlines(), out.stdout + out.stderr


# -- in process, in memory --------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_source_message_is_one_trace_through_every_actor() -> None:
    node = Node(settings(enabled=True, exporter="memory"))
    assert node.tracer is not None
    assert await node.run(handle_signals=False) == EXIT_OK
    assert len(node.actors["sink"].seen) == COUNT  # type: ignore[attr-defined]
    spans = tracing.memory_spans()
    by_id = {s.context.span_id: s for s in spans}
    sinks = [s for s in spans if s.name == "sink handle Squared"]
    assert len(sinks) == COUNT
    traces = set()
    for leaf in sinks:
        chain = [leaf]
        while chain[-1].parent is not None:
            chain.append(by_id[chain[-1].parent.span_id])
        names = [s.name for s in reversed(chain)]
        assert names == ["counter publish Num", "square handle Num", "sink handle Squared"]
        assert len({s.context.trace_id for s in chain}) == 1
        assert chain[-1].attributes["levibot.actor"] == "counter"
        traces.add(leaf.context.trace_id)
    assert len(traces) == COUNT  # one trace per counted number
    assert node.tracer.provider.resource.attributes["service.instance.id"] == node.node_id


# -- the wire ---------------------------------------------------------------------------------


def test_traceparent_round_trips_and_a_bad_one_is_no_context() -> None:
    from opentelemetry.trace import SpanContext, TraceFlags

    ctx = SpanContext(0xABC, 0x123, is_remote=False, trace_flags=TraceFlags(1))
    value = format_traceparent(ctx)
    assert value == f"00-{0xABC:032x}-{0x123:016x}-01"
    back = parse_traceparent(value)
    assert (back.trace_id, back.span_id, int(back.trace_flags), back.is_remote) == (
        0xABC,
        0x123,
        1,
        True,
    )
    for bad in (
        None,
        "",
        "garbage",
        f"ff-{0xABC:032x}-{0x123:016x}-01",  # the forbidden version
        f"00-{0:032x}-{0x123:016x}-01",  # an all-zero trace id
        f"00-{0xABC:032x}-{0:016x}-01",
        f"00-{0xABC:031x}-{0x123:016x}-01",
        f"00-{0xABC:032X}-{0x123:016x}-01".replace("ABC", "XYZ"),
    ):
        assert parse_traceparent(bad) is None, bad


def test_contexts_are_bound_to_the_object_and_bounded() -> None:
    contexts = Contexts(limit=3)
    msgs = [num(i) for i in range(5)]
    for i, m in enumerate(msgs):
        contexts.bind(m, i)
    assert len(contexts) == 3
    assert [contexts.get(m) for m in msgs] == [None, None, 2, 3, 4]
    assert contexts.get(num(4)) is None  # equal but not the same object: not bound


def test_frame_headers_round_trip_through_a_frame() -> None:
    from levibot.bus._frame import FrameDecoder, FrameEncoder
    from levibot.messages import Codec

    tracer = tracing.configure(
        TracingConfig(enabled=True, exporter="memory"), service="t", node="n"
    )
    assert tracer is not None
    msgs: list[Message] = [num(i) for i in range(3)]
    values = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(3)]
    for m, v in zip(msgs, values, strict=True):
        tracer.bind_traceparent(m, v)
    assert [tracer.traceparent(m) for m in msgs] == values
    data = FrameEncoder().encode("n", "inc", 1, msgs)
    decoder = FrameDecoder(Codec([Num]))

    # Different contexts: one value per message, in order.
    headers = _trace.frame_headers(tracer, msgs)
    assert headers == {_trace.TRACEPARENTS: ",".join(values)}
    pairs = _trace.incoming(headers, data, decoder)
    assert pairs == list(zip(msgs, values, strict=True))  # decoded again: equal messages

    # One context for the whole frame: the standard header alone, for any message in it.
    for m in msgs:
        tracer.bind_traceparent(m, values[0])
    assert _trace.frame_headers(tracer, msgs) == {tracing.TRACEPARENT: values[0]}
    assert _trace.incoming({tracing.TRACEPARENT: values[0]}, data, decoder) == [(None, values[0])]

    # None: no header at all.
    assert _trace.frame_headers(tracer, [num(9)]) is None
    assert _trace.incoming({"other": "x"}, data, decoder) is None
    # A message without a context inside a frame: an empty slot, skipped on the way in.
    fresh = num(7)
    mixed: list[Message] = [msgs[0], fresh]
    headers = _trace.frame_headers(tracer, mixed)
    assert headers == {_trace.TRACEPARENTS: values[0] + ","}
    both = FrameEncoder().encode("n", "inc", 1, mixed)
    assert _trace.incoming(headers, both, decoder) == [(msgs[0], values[0])]
    # A garbled frame under a traceparents header: nothing bound, nothing raised.
    assert _trace.incoming(headers, b"\x94garbage", decoder) is None


@pytest.mark.anyio
async def test_deliver_binds_the_incoming_context_and_a_bad_header_starts_a_new_trace() -> None:
    tracer = tracing.configure(
        TracingConfig(enabled=True, exporter="memory"), service="t", node="n"
    )
    assert tracer is not None
    got: list[Any] = []

    async def deliver(msg: Any, done: Any) -> int:
        got.append(msg)
        return 1

    traced = _trace.wrap_deliver(deliver, tracer)
    good, bad, plain = num(1), num(2), num(3)
    value = f"00-{5:032x}-{6:016x}-01"
    token = _trace._incoming.set([(None, value)])
    try:
        await traced(good, None)
    finally:
        _trace._incoming.reset(token)
    token = _trace._incoming.set([(None, "00-nonsense")])
    try:
        await traced(bad, None)
    finally:
        _trace._incoming.reset(token)
    await traced(plain, None)
    assert got == [good, bad, plain]  # every message delivered, whatever its header
    assert tracer.traceparent(good) == value
    assert tracer.traceparent(bad) is None and tracer.traceparent(plain) is None


# -- OTLP -------------------------------------------------------------------------------------


class _Collector(http.server.ThreadingHTTPServer):
    """A stand-in OpenTelemetry collector: takes OTLP/HTTP protobuf trace exports."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.requests: list[tuple[str, Any]] = []


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = pb.ExportTraceServiceRequest()
        request.ParseFromString(body)
        assert isinstance(self.server, _Collector)
        self.server.requests.append((self.path, request))
        reply = pb.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.anyio
async def test_the_otlp_exporter_sends_every_span_to_the_configured_endpoint() -> None:
    collector = _Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
        node = Node(settings(enabled=True, exporter="otlp", endpoint=endpoint))
        assert await node.run(handle_signals=False) == EXIT_OK  # the stop flushes the exporter
    finally:
        collector.shutdown()
        collector.server_close()
    assert collector.requests and {path for path, _ in collector.requests} == {"/v1/traces"}
    spans, services = [], set()
    for _, request in collector.requests:
        for rs in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            services.add((attrs["service.name"], attrs["service.instance.id"]))
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    assert services == {("levibot", node.node_id)}
    assert len(spans) == 3 * COUNT
    by_id = {s.span_id: s for s in spans}
    for leaf in (s for s in spans if s.name == "sink handle Squared"):
        square = by_id[leaf.parent_span_id]
        root = by_id[square.parent_span_id]
        assert (square.name, root.name, root.parent_span_id) == (
            "square handle Num", "counter publish Num", b"",
        )  # fmt: skip
        assert leaf.trace_id == square.trace_id == root.trace_id


@pytest.mark.anyio
async def test_a_failing_handler_marks_its_span_and_still_raises_to_supervision() -> None:
    tracer = tracing.configure(
        TracingConfig(enabled=True, exporter="memory"), service="t", node="n"
    )
    assert tracer is not None

    async def boom(msg: Any) -> None:
        raise ValueError("poison")

    handle = tracer._handler("risk", boom)
    with pytest.raises(ValueError, match="poison"):
        await handle(num(1))
    (span,) = tracing.memory_spans()
    assert span.name == "risk handle Num" and span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == ["exception"]
    assert span.end_time is not None

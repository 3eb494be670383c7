"""Distributed tracing with OpenTelemetry: one trace per tick, across every process it passes.

Off by default (``[tracing] enabled = false``), and then it costs nothing: ``configure`` returns
None, nothing is wrapped, and OpenTelemetry is not even imported. On, the node wraps:

- each actor's ``handle`` (and an overridden ``handle_batch``) in a span whose parent is the
  span that published the message (``levibot.actor`` etc. as attributes);
- each actor's ``publish``: the message is bound to the current span's context; a source
  (which publishes outside any handling) gets a root span per published message;
- the NATS mirror (``levibot.bus._trace``): the bound context goes out as a W3C ``traceparent``
  header (JetStream), or per frame on core NATS, and comes back bound to the decoded message.

A message carries no trace field: the context is bound to the message *object* in a bounded
table (``Contexts``) that holds the message itself, so an id is never reused while its entry
lives. A message published in process is delivered as the same object, so the handler finds
the publisher's context; past the table's size the oldest entries are forgotten (their handling
then starts a new trace).

The exporter is chosen by ``[tracing] exporter``: ``otlp`` (OTLP over HTTP/protobuf to
``endpoint``), ``console`` (stderr), ``file`` (one JSON object per finished span, appended to
``path``: what the cross-process test reads) or ``memory`` (kept in process: ``memory_spans``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from levibot.settings import TracingConfig

#: The W3C trace-context header (https://www.w3.org/TR/trace-context/).
TRACEPARENT = "traceparent"
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

#: Standard logging, as OpenTelemetry's own warnings ("Queue full"): structlog is a layer above.
_log = logging.getLogger("levibot.tracing")

#: How many in-flight messages keep their trace context (oldest forgotten first).
CONTEXTS_MAX = 65_536

_memory: Any = None  # the InMemorySpanExporter of the last ``memory`` configuration


class Contexts:
    """A bounded table: message object → the span context it was published under."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int = CONTEXTS_MAX) -> None:
        self.limit = limit
        # id(msg) → (msg, context): holding the message keeps its id from being reused.
        self._entries: dict[int, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, msg: Any, context: Any) -> None:
        """Remember that ``msg`` travels under span context ``context``."""
        entries = self._entries
        key = id(msg)
        entries.pop(key, None)  # re-bound: it moves to the newest end
        entries[key] = (msg, context)
        if len(entries) > self.limit:
            del entries[next(iter(entries))]

    def get(self, msg: Any) -> Any:
        """Return the span context ``msg`` was bound to, or None."""
        entry = self._entries.get(id(msg))
        if entry is None or entry[0] is not msg:
            return None
        return entry[1]


def format_traceparent(context: Any) -> str:
    """Return the W3C ``traceparent`` value of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(value: str | None) -> Any:
    """Return the remote span context of a W3C ``traceparent`` value; None when it is absent or
    malformed (a bad header starts a new trace, it never fails the message)."""
    if not value:
        return None
    m = _TRACEPARENT_RE.match(value.strip())
    if m is None or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m.group(4), 16))
    )


class Tracer:
    """A node's tracing: its provider, the message → context table and the wrappers."""

    def __init__(self, provider: Any, *, node: str) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._context = context
        self.provider = provider
        self.node = node
        self.tracer = provider.get_tracer("levibot")
        self.contexts = Contexts()

    # -- contexts ---------------------------------------------------------------------------

    def traceparent(self, msg: Any) -> str | None:
        """Return the ``traceparent`` of ``msg`` (None when it has no context)."""
        context = self.contexts.get(msg)
        return None if context is None else format_traceparent(context)

    def bind_traceparent(self, msg: Any, value: str | None) -> None:
        """Bind ``msg`` (decoded from NATS) to the context its header carried, if any."""
        context = parse_traceparent(value)
        if context is not None:
            self.contexts.bind(msg, context)

    def _parent(self, msg: Any) -> Any:
        context = self.contexts.get(msg)
        if context is None:
            return None
        return self._trace.set_span_in_context(self._trace.NonRecordingSpan(context))

    # -- wrappers ---------------------------------------------------------------------------

    def publisher(
        self, actor: str, publish: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """Return ``publish`` binding each message to the current span (a new root span when
        there is none: a source's message starts its trace)."""
        trace, tracer, contexts = self._trace, self.tracer, self.contexts
        kind = trace.SpanKind.PRODUCER
        attrs = {"levibot.actor": actor, "levibot.node": self.node}

        async def traced_publish(msg: Any) -> None:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                contexts.bind(msg, context)
                await publish(msg)
                return
            name = f"{actor} publish {type(msg).__name__}"
            span = tracer.start_span(name, kind=kind, attributes=_attributes(attrs, msg))
            contexts.bind(msg, span.get_span_context())
            await within(span, publish(msg))

        within = self._within
        return traced_publish

    async def _within(self, span: Any, work: Awaitable[None]) -> None:
        """Await ``work`` with ``span`` current, then end it (failed: the error recorded)."""
        # start_span, attach and detach rather than start_as_current_span: the same, without
        # its generator-based context managers (a third of the cost of an unsampled span).
        context = self._context
        token = context.attach(self._trace.set_span_in_context(span))
        try:
            await work
        except Exception as exc:
            if span.is_recording():
                from opentelemetry.trace import Status, StatusCode

                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            context.detach(token)
            span.end()

    def instrument(self, actor: Any) -> None:
        """Wrap ``actor.handle`` (and an overridden ``handle_batch``) in spans, in place."""
        name = actor.ctx.name
        actor.handle = self._handler(name, actor.handle)
        # (By name: the runtime is a layer above this module.)
        if type(actor).handle_batch.__qualname__ != "Actor.handle_batch":
            # The default handle_batch calls handle per message: those spans are enough.
            actor.handle_batch = self._batch_handler(name, actor.handle_batch)

    def _handler(
        self, actor: str, handle: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        trace, tracer, parent_of = self._trace, self.tracer, self._parent
        kind = trace.SpanKind.CONSUMER
        attrs = {"levibot.actor": actor, "levibot.node": self.node}

        async def traced_handle(msg: Any) -> None:
            name = f"{actor} handle {type(msg).__name__}"
            # Called from the actor's own handle_batch: a child of that span, else of the
            # message's publisher.
            nested = trace.get_current_span().get_span_context().is_valid
            parent = None if nested else parent_of(msg)
            span = tracer.start_span(
                name, context=parent, kind=kind, attributes=_attributes(attrs, msg)
            )
            await within(span, handle(msg))

        within = self._within
        return traced_handle

    def _batch_handler(
        self, actor: str, handle_batch: Callable[[Sequence[Any]], Awaitable[None]]
    ) -> Callable[[Sequence[Any]], Awaitable[None]]:
        trace, tracer, contexts = self._trace, self.tracer, self.contexts
        kind = trace.SpanKind.CONSUMER
        attrs = {"levibot.actor": actor, "levibot.node": self.node}

        async def traced_batch(msgs: Sequence[Any]) -> None:
            # One span for the batch: the parent is the last message's context (the newest:
            # a tick's Features come after its Bar, so its trace goes on through the feature
            # actor), the others' contexts are links, so their traces point here too.
            found = [c for c in map(contexts.get, msgs) if c is not None]
            parent = None
            if trace.get_current_span().get_span_context().is_valid:
                links = [trace.Link(c) for c in found]  # nested in this actor's handle
            else:
                if found:
                    parent = trace.set_span_in_context(trace.NonRecordingSpan(found[-1]))
                links = [trace.Link(c) for c in found[:-1]]
            batch_attrs = {
                **attrs,
                "levibot.batch_size": len(msgs),
                "levibot.message": ",".join(sorted({type(m).__name__ for m in msgs})),
            }
            span = tracer.start_span(
                f"{actor} handle_batch", context=parent, kind=kind, attributes=batch_attrs,
                links=links,
            )  # fmt: skip
            await within(span, handle_batch(msgs))

        within = self._within
        return traced_batch

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter (at node stop)."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # an exporter that cannot flush must not fail the stop
            _log.warning("tracing: shutdown failed: %r", exc)


def _attributes(base: dict[str, Any], msg: Any) -> dict[str, Any]:
    attrs = {**base, "levibot.message": type(msg).__name__, "levibot.ts_event": msg.ts_event}
    symbol = getattr(msg, "symbol", None)
    if isinstance(symbol, str):
        attrs["levibot.symbol"] = symbol
    return attrs


class JsonLinesExporter:
    """Appends each finished span as one JSON object per line to a file (``exporter = "file"``).

    Each line has the ids as hex (``trace_id``, ``span_id``, ``parent_id`` or null), the name,
    kind, times, attributes and the resource's attributes: enough to rebuild the tree.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(span_record(s), separators=(",", ":")) + "\n" for s in spans]
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.writelines(lines)
        except OSError as exc:
            _log.warning("tracing: cannot write %s: %s", self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: each export opens and closes the file."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every export is written at once."""
        return True


def span_record(span: Any) -> dict[str, Any]:
    """Return a finished SDK span as a plain dict (hex ids, attributes, resource)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [f"{link.context.span_id:016x}" for link in span.links],
        "resource": {k: v for k, v in span.resource.attributes.items() if isinstance(v, str)},
    }


def configure(
    config: TracingConfig, *, service: str, node: str, groups: Sequence[str] = ()
) -> Tracer | None:
    """Return the node's ``Tracer`` as ``config`` says, or None when tracing is off.

    OpenTelemetry is imported only here, when on. The provider is the node's own (not the
    process-global one), so several nodes in one process (tests) each have theirs.
    """
    if not config.enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {
            "service.name": config.service_name or service,
            "service.instance.id": node,
            "levibot.groups": ",".join(groups),
        }
    )
    sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    exporter: Any
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.endpoint)
    elif config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter(out=sys.stderr)
    elif config.exporter == "file":
        exporter = JsonLinesExporter(config.path)
    else:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        global _memory
        exporter = _memory = InMemorySpanExporter()
    processor: Any
    if config.exporter == "memory":
        processor = SimpleSpanProcessor(exporter)  # in process, finished spans at once
    else:  # off the hot path: a thread exports in batches
        processor = BatchSpanProcessor(
            exporter,
            max_queue_size=config.max_queue,
            max_export_batch_size=min(512, config.max_queue),
        )
    provider.add_span_processor(processor)
    return Tracer(provider, node=node)


def memory_spans() -> list[Any]:
    """Return the finished spans of the last ``exporter = "memory"`` configuration."""
    return list(_memory.get_finished_spans()) if _memory is not None else []
